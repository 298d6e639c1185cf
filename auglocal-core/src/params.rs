//! Named parameters and buffers, each tagged with the part of the network that owns it.
//!
//! The owner tag is what lets the engine step one module's parameters right after that
//! module's backward pass, without the model knowing anything about modules.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};

/// Which part of the network a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// Backbone unit `i` (a local layer).
    Unit(usize),
    /// The backbone's output layer (pool + FC).
    Head,
    /// The auxiliary network attached after unit `i`.
    Aux(usize),
}

/// Whether the optimizer trains a tensor or only the forward pass updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Trained by the optimizer (weight decay applies).
    Param,
    /// State such as BatchNorm running statistics: saved, never decayed or stepped.
    Buffer,
}

/// One stored tensor.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full dotted name, PyTorch's for the backbone (`layer1.0.conv1.weight`); unique in the
    /// store.
    pub name: String,
    /// The tensor itself, shared with the layer that uses it.
    pub var: Var,
    /// Whether the optimizer trains it.
    pub role: Role,
    /// `None` for a tensor made by a builder no owner was given: the engine refuses to train
    /// a network holding one, since it could not tell which module steps it.
    pub owner: Option<Owner>,
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Every element the given value; draws nothing from the generator.
    Const(f64),
    /// Drawn from a normal distribution of mean 0.
    Normal {
        /// Standard deviation, finite and >= 0.
        std: f64,
    },
    /// Drawn uniformly from `[-bound, bound)`.
    Uniform {
        /// Half-width of the interval, > 0.
        bound: f64,
    },
}

/// All named tensors of a network (backbone, output layer and auxiliary networks), in
/// creation order. Cloning shares the same store.
#[derive(Clone, Default)]
pub struct ParamStore {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A poisoned lock only means another thread panicked mid-push; the Vec is intact.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of every entry, in creation order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.lock().iter().find(|e| e.name == name).cloned()
    }

    /// Entries owned by any of `owners`, in creation order.
    pub fn owned_by(&self, owners: &[Owner]) -> Vec<Entry> {
        self.lock()
            .iter()
            .filter(|e| e.owner.is_some_and(|o| owners.contains(&o)))
            .cloned()
            .collect()
    }

    /// Number of trainable scalars among `entries`.
    pub fn count_params(entries: &[Entry]) -> usize {
        entries
            .iter()
            .filter(|e| e.role == Role::Param)
            .map(|e| e.var.elem_count())
            .sum()
    }

    fn insert(&self, entry: Entry) -> Result<Var> {
        let mut entries = self.lock();
        if entries.iter().any(|e| e.name == entry.name) {
            return Err(Error::InvalidSetting {
                setting: "parameter name",
                value: entry.name,
                valid: "a name not used by another tensor of the same network".into(),
            });
        }
        let var = entry.var.clone();
        entries.push(entry);
        Ok(var)
    }
}

/// Creates parameters under a name prefix, for one owner, from a seeded generator.
///
/// A fresh builder has no owner: a model tags each part with [`ParamBuilder::owned_by`]
/// (`Owner::Unit(i)` for unit `i`, `Owner::Head` for the output layer), and
/// [`Engine::new`](crate::Engine::new) fails naming any tensor created without one.
///
/// Initial values are drawn on the host from a ChaCha8 stream in creation order, so the same
/// seed gives the same network on every machine and device.
#[derive(Clone)]
pub struct ParamBuilder {
    store: ParamStore,
    prefix: String,
    owner: Option<Owner>,
    device: Device,
    rng: Arc<Mutex<ChaCha8Rng>>,
    /// Draw initial values; when false every parameter starts at zero.
    draw: bool,
    /// What [`ParamBuilder::param`] creates: parameters, or buffers ([`ParamBuilder::frozen`]).
    param_role: Role,
}

impl ParamBuilder {
    /// A builder of tensors on `device` into `store`, with no prefix and no owner, drawing
    /// initial values from a generator seeded with `seed`.
    pub fn new(store: &ParamStore, device: &Device, seed: u64) -> Self {
        ParamBuilder {
            store: store.clone(),
            prefix: String::new(),
            owner: None,
            device: device.clone(),
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            draw: true,
            param_role: Role::Param,
        }
    }

    /// A builder whose parameters all start at zero, without drawing a random number.
    /// The zeros come from a fresh allocation the OS fills lazily, so building even
    /// VGG-13's 133M parameters this way takes milliseconds and almost no resident memory:
    /// what counting parameters, listing units or loading weights afterwards needs.
    pub fn zeros(store: &ParamStore, device: &Device) -> Self {
        ParamBuilder {
            draw: false,
            ..Self::new(store, device, 0)
        }
    }

    /// The same builder one name level down (`pp("layer1").pp("0")` -> `layer1.0.`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        ParamBuilder {
            prefix,
            ..self.clone()
        }
    }

    /// The same builder, creating tensors for `owner`.
    pub fn owned_by(&self, owner: Owner) -> Self {
        ParamBuilder {
            owner: Some(owner),
            ..self.clone()
        }
    }

    /// The same builder, creating what layers ask as parameters as buffers: saved in
    /// checkpoints, never stepped by the optimizer (MAN's moving-average copy of a unit).
    pub fn frozen(&self) -> Self {
        ParamBuilder {
            param_role: Role::Buffer,
            ..self.clone()
        }
    }

    /// The device the tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The store the tensors go into (shared with every builder derived from this one).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable f32 parameter (a buffer from a [`ParamBuilder::frozen`] builder).
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        if !self.draw {
            return self.store.insert(Entry {
                name: self.full_name(name),
                var: Var::zeros(shape, DType::F32, &self.device)?,
                role: self.param_role,
                owner: self.owner,
            });
        }
        let count: usize = shape.iter().product();
        let values: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            match init {
                Init::Const(c) => vec![c as f32; count],
                Init::Normal { std } => {
                    let dist = Normal::new(0.0, std).map_err(|e| Error::InvalidSetting {
                        setting: "normal init std",
                        value: std.to_string(),
                        valid: format!("a finite non-negative number ({e})"),
                    })?;
                    (0..count).map(|_| dist.sample(&mut *rng) as f32).collect()
                }
                Init::Uniform { bound } => (0..count)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect(),
            }
        };
        let tensor = Tensor::from_vec(values, shape, &self.device)?;
        self.store.insert(Entry {
            name: self.full_name(name),
            var: Var::from_tensor(&tensor)?,
            role: self.param_role,
            owner: self.owner,
        })
    }

    /// A non-trainable buffer with the given initial value.
    pub fn buffer(&self, name: &str, init: &Tensor) -> Result<Var> {
        let init = init.to_device(&self.device)?;
        self.store.insert(Entry {
            name: self.full_name(name),
            var: Var::from_tensor(&init)?,
            role: Role::Buffer,
            owner: self.owner,
        })
    }

    /// A buffer filled with `value`.
    pub fn buffer_const(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        value: f64,
    ) -> Result<Var> {
        let t = (Tensor::ones(shape, dtype, &Device::Cpu)? * value)?;
        self.buffer(name, &t)
    }
}
