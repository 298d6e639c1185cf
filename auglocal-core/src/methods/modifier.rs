//! Modifiers: changes to how any local method's loss reads its module's output, written
//! after the method's name (`dgl+man`, `infopro+man+hpff`). One line each in
//! [`MODIFIERS`]; [`Modified`] applies them around whatever builds the local losses.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::hpff::PatchFusion;
use super::loss::{LocalLoss, LocalLossBuilder, LossSite};
use super::man::MomentumBlocks;
use super::table::{MethodInfo, METHODS};
use crate::error::{Error, Result};
use crate::params::ParamBuilder;
use crate::plan::UnitAux;

/// One line of the table of modifiers.
#[derive(Debug, Clone, Copy)]
pub struct ModifierInfo {
    /// What follows `+` in a method's name.
    pub name: &'static str,
    /// One line for `--help` and the README.
    pub help: &'static str,
}

/// Every modifier, in the order a method's full name lists them.
#[rustfmt::skip]
pub const MODIFIERS: &[ModifierInfo] = &[
    ModifierInfo { name: "man", help: "MAN: the local loss reads LB(h) + EMA(h), where LB is a trained copy of the next unit and EMA a copy that follows it by a moving average (momentum 0.995), both starting as the unit; the method's head is sized for the next unit's output" },
    ModifierInfo { name: "hpff", help: "HPFF's patch feature fusion: the local loss runs on the 2x2 quadrants of its input as on four images (a decoder reconstructs the image quadrant of its patch), the loss averaged over the patches and the prediction the mean of the four patches' logits" },
];

/// The modifiers a method carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// `+man`: momentum auxiliary network ([`MomentumBlocks`]).
    pub man: bool,
    /// `+hpff`: patch feature fusion ([`PatchFusion`]).
    pub hpff: bool,
}

impl Modifiers {
    /// Whether no modifier is set.
    pub fn is_empty(&self) -> bool {
        *self == Modifiers::default()
    }

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "man" => Some(&mut self.man),
            "hpff" => Some(&mut self.hpff),
            _ => None,
        }
    }

    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        MODIFIERS.iter().map(|m| m.name).filter(|name| match *name {
            "man" => self.man,
            "hpff" => self.hpff,
            _ => false,
        })
    }
}

/// A method's full name: a line of [`METHODS`] and its modifiers, written `dgl+man+hpff`
/// (modifiers in the order of [`MODIFIERS`], whatever order they were given in). What
/// `--method` takes and checkpoints record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodName {
    /// The method's line of the table.
    pub info: &'static MethodInfo,
    /// What follows it.
    pub modifiers: Modifiers,
}

impl MethodName {
    /// Parses `method[+modifier...]`. Refuses an unknown method or modifier, a modifier
    /// given twice, and modifiers on end-to-end backprop (they change local losses).
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = text.split('+');
        let info = MethodInfo::named(parts.next().unwrap_or_default().trim())?;
        let mut modifiers = Modifiers::default();
        for part in parts {
            let part = part.trim();
            let invalid = |valid: String| Error::InvalidSetting {
                setting: "method modifier",
                value: format!("`{part}` in `{text}`"),
                valid,
            };
            let known = MODIFIERS
                .iter()
                .map(|m| format!("+{}", m.name))
                .collect::<Vec<_>>()
                .join(", ");
            match modifiers.flag(part) {
                None => return Err(invalid(format!("one of {known}"))),
                Some(true) => return Err(invalid(format!("each of {known} at most once"))),
                Some(flag) => *flag = true,
            }
        }
        if !modifiers.is_empty() && info.loss.is_none() {
            return Err(Error::InvalidSetting {
                setting: "method modifier",
                value: format!("`{text}`"),
                valid: format!(
                    "modifiers on a method with local losses ({}); {} trains no local loss for them to change",
                    METHODS
                        .iter()
                        .filter(|m| m.loss.is_some())
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    info.name
                ),
            });
        }
        Ok(MethodName { info, modifiers })
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info.name)?;
        for name in self.modifiers.names() {
            write!(f, "+{name}")?;
        }
        Ok(())
    }
}

impl Serialize for MethodName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MethodName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A [`LocalLossBuilder`] with modifiers around it: `+man` puts its blocks before the loss
/// and builds the loss for the next unit's position; `+hpff` builds it for a quarter of
/// the image and runs it on patches. The engine builds every run's losses through this.
pub struct Modified<'a> {
    /// What builds the method's own loss (the table's line, or yours).
    pub losses: &'a dyn LocalLossBuilder,
    /// The modifiers to apply.
    pub modifiers: Modifiers,
}

impl LocalLossBuilder for Modified<'_> {
    fn build(&self, site: &LossSite<'_>, pb: &ParamBuilder) -> Result<Box<dyn LocalLoss>> {
        let blocks = match self.modifiers.man {
            true => Some(MomentumBlocks::new(site, pb)?),
            false => None,
        };
        // MAN's blocks map the module's output to the next unit's; the loss reads that.
        let next = UnitAux {
            unit: site.aux.unit + 1,
            man: None,
            ..site.aux.clone()
        };
        let mut inner = LossSite {
            aux: if blocks.is_some() { &next } else { site.aux },
            ..*site
        };
        if self.modifiers.hpff {
            PatchFusion::check_site(&inner)?;
            inner.input.image_size /= 2;
        }
        let mut loss = self.losses.build(&inner, pb)?;
        if self.modifiers.hpff {
            loss = Box::new(PatchFusion::new(loss));
        }
        if let Some(blocks) = blocks {
            loss = Box::new(blocks.before(loss));
        }
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_parse_and_print_in_table_order() {
        let name = MethodName::parse("dgl+hpff+man").unwrap();
        assert_eq!(name.info.name, "dgl");
        assert_eq!(
            name.modifiers,
            Modifiers {
                man: true,
                hpff: true
            }
        );
        assert_eq!(name.to_string(), "dgl+man+hpff");
        assert_eq!(
            MethodName::parse("auglocal").unwrap().to_string(),
            "auglocal"
        );
        assert_eq!(
            MethodName::parse("dgl+man+man").unwrap_err().to_string(),
            "invalid method modifier: `man` in `dgl+man+man` (valid: each of +man, +hpff at most once)"
        );
        assert_eq!(
            MethodName::parse("dgl+sgd").unwrap_err().to_string(),
            "invalid method modifier: `sgd` in `dgl+sgd` (valid: one of +man, +hpff)"
        );
        let bp = MethodName::parse("bp+man").unwrap_err().to_string();
        assert!(
            bp.starts_with("invalid method modifier: `bp+man` (valid: modifiers on a method with local losses (auglocal, dgl,"),
            "{bp}"
        );
        let json = serde_json::to_string(&MethodName::parse("infopro+hpff").unwrap()).unwrap();
        assert_eq!(json, "\"infopro+hpff\"");
        let back: MethodName = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), "infopro+hpff");
    }
}
