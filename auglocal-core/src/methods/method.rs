//! A method of the table with its settings: what a plan and an engine are built from.

use serde::{Deserialize, Serialize};

use super::modifier::{MethodName, Modifiers};
use super::table::{MethodInfo, ModuleRule, METHODS};
use crate::error::{Error, Result};

/// The settings a method reads: AugLocal's depth and pyramid, the split-table methods' K.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MethodSettings {
    /// AugLocal's maximum auxiliary depth d (K = units - d).
    pub aux_depth: usize,
    /// AugLocal's pyramid coefficient in [0, 1] (0: every auxiliary network d deep).
    pub pyramid: f64,
    /// K of the split-table methods (`None`: one module per unit).
    pub modules: Option<usize>,
}

impl Default for MethodSettings {
    /// The paper's: d = 2, pyramid 0.5, one module per unit.
    fn default() -> Self {
        MethodSettings {
            aux_depth: 2,
            pyramid: 0.5,
            modules: None,
        }
    }
}

/// A method of the table with its modifiers and settings: what a plan is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Method {
    name: MethodName,
    settings: MethodSettings,
}

impl Method {
    /// Method `name` of [`METHODS`], with modifiers after `+` ([`MethodName::parse`]), and
    /// `settings`. A K (`modules`) is refused for the methods that choose their own.
    pub fn new(name: &str, settings: MethodSettings) -> Result<Self> {
        Self::from_name(MethodName::parse(name)?, settings)
    }

    /// [`Method::new`] for a parsed name.
    pub fn from_name(name: MethodName, settings: MethodSettings) -> Result<Self> {
        let info = name.info;
        if let (Some(k), ModuleRule::EndToEnd | ModuleRule::AugLocal) =
            (settings.modules, info.rule)
        {
            return Err(Error::InvalidSetting {
                setting: "number of modules",
                value: format!("{k} for method {name}"),
                valid: format!(
                    "no K for {name} ({}); a K for the methods with one head per unit: {}",
                    info.rule.describe(),
                    METHODS
                        .iter()
                        .filter(|m| m.rule == ModuleRule::SplitTable)
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(Method { name, settings })
    }

    /// Method `name` with the default settings.
    pub fn named(name: &str) -> Result<Self> {
        Self::new(name, MethodSettings::default())
    }

    /// AugLocal at depth `aux_depth` with pyramid coefficient `pyramid`.
    pub fn auglocal(aux_depth: usize, pyramid: f64) -> Result<Self> {
        Self::new(
            "auglocal",
            MethodSettings {
                aux_depth,
                pyramid,
                modules: None,
            },
        )
    }

    /// The method's line of the table: name, help, module rule and loss builder.
    pub fn info(&self) -> &'static MethodInfo {
        self.name.info
    }

    /// The method's full name with its modifiers (what `--method` takes and checkpoints
    /// record), e.g. `dgl+man`.
    pub fn name(&self) -> String {
        self.name.to_string()
    }

    /// The modifiers around the method's local losses.
    pub fn modifiers(&self) -> Modifiers {
        self.name.modifiers
    }

    /// The settings the method was built with.
    pub fn settings(&self) -> &MethodSettings {
        &self.settings
    }
}
