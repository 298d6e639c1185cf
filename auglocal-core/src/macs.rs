//! The multiply-add (MAC) counter the arithmetic layers report to.
//!
//! [`Conv2d`](crate::nn::Conv2d) (channel groups included) and [`Linear`](crate::nn::Linear)
//! call [`record`] with the MACs of each call, computed from the shapes they actually see;
//! the count goes to a thread-local counter that only exists inside [`count`]. What a whole
//! training step counts, module by module, is [`crate::flops`]'s business.
//!
//! What is counted, per layer call with `F` forward MACs:
//! - forward: `F` (a k x k convolution: output elements x in_channels / groups x k x k; a
//!   linear layer: rows x in x out);
//! - weight gradient: `F` (the same products, once per weight element and output position);
//! - input gradient: `F` when the layer's input is tracked by autograd, 0 otherwise: the
//!   first layers of a module read the detached output of the previous module (or the
//!   images), whose gradient nobody needs.

use std::cell::RefCell;

use serde::Serialize;

/// Multiply-adds of forward and backward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Macs {
    /// Forward passes of the layers counted.
    pub forward: u64,
    /// Gradients with respect to layer inputs.
    pub input_grad: u64,
    /// Gradients with respect to weights.
    pub weight_grad: u64,
    /// Layer calls counted (each a forward pass of one convolution or linear layer).
    pub layers: u64,
}

impl Macs {
    /// The backward pass: input gradients plus weight gradients.
    pub fn backward(&self) -> u64 {
        self.input_grad + self.weight_grad
    }

    /// Forward plus backward.
    pub fn total(&self) -> u64 {
        self.forward + self.backward()
    }

    pub(crate) fn add(&mut self, other: Macs) {
        self.forward += other.forward;
        self.input_grad += other.input_grad;
        self.weight_grad += other.weight_grad;
        self.layers += other.layers;
    }

    pub(crate) fn scaled_down(self, divisor: u64) -> Macs {
        Macs {
            forward: self.forward / divisor,
            input_grad: self.input_grad / divisor,
            weight_grad: self.weight_grad / divisor,
            layers: self.layers,
        }
    }
}

thread_local! {
    static COUNTER: RefCell<Option<Macs>> = const { RefCell::new(None) };
}

/// Called by a layer for each call: `macs` forward multiply-adds, `input_tracked` whether
/// autograd will need the gradient of the layer's input. Does nothing outside [`count`].
pub fn record(macs: usize, input_tracked: bool) {
    COUNTER.with(|counter| {
        if let Some(total) = counter.borrow_mut().as_mut() {
            let macs = macs as u64;
            total.forward += macs;
            total.weight_grad += macs;
            total.layers += 1;
            if input_tracked {
                total.input_grad += macs;
            }
        }
    });
}

/// Runs `f` and returns what the layers it called on this thread recorded. Nested counts
/// also add to the enclosing one.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, Macs) {
    let outer = COUNTER.with(|c| c.replace(Some(Macs::default())));
    let out = f();
    let inner = COUNTER.with(|c| c.replace(outer)).unwrap_or_default();
    COUNTER.with(|c| {
        if let Some(total) = c.borrow_mut().as_mut() {
            total.add(inner);
        }
    });
    (out, inner)
}
