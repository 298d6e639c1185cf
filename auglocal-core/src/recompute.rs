//! Activation checkpointing per unit: a module's forward pass keeps only each unit's input,
//! and its backward pass runs the units again, last to first, each with its graph alive
//! only while its own gradients are taken. Memory holds one unit's graph and the unit
//! inputs instead of every unit's graph (the baseline the AugLocal reviewers asked for),
//! for the price of a second forward pass.
//!
//! The gradients are those of the plain pass bit for bit: a unit's backward pass receives
//! its output's gradient as the gradient of `sum(output * upstream)`, which is `upstream`
//! exactly, and runs the same operations in the same order as in the whole graph.
//! BatchNorm's running averages move once per step, as in the plain pass: the second
//! forward pass of a unit puts them back as they were.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::net::LocalNet;
use crate::params::{Owner, ParamStore, Role};

/// What a module's pass returns: the last unit's output (with its graph), the loss, the
/// correct predictions of its classifier, and the gradients of every parameter.
pub(crate) struct Pass {
    pub output: Tensor,
    pub loss: Tensor,
    pub correct: Option<usize>,
    pub grads: GradStore,
}

/// Trains units `units` on `x` with their activations recomputed: `loss` turns the last
/// unit's output into the module's loss (f32) and correct predictions.
pub(crate) fn recomputed_pass(
    net: &dyn LocalNet,
    store: &ParamStore,
    units: &[usize],
    x: &Tensor,
    loss: impl FnOnce(&Tensor) -> Result<(Tensor, Option<usize>)>,
) -> Result<Pass> {
    let Some((&last, earlier)) = units.split_last() else {
        return Err(candle_core::Error::Msg("a module without units".into()).into());
    };
    // Forward, keeping each unit's input and dropping its graph at once.
    let mut inputs = Vec::with_capacity(earlier.len());
    let mut h = x.clone();
    for &unit in earlier {
        let y = net.forward_unit(unit, &h, true)?.detach();
        inputs.push(h);
        h = y;
    }
    // The last unit and the loss keep their graph, as in the plain pass. Its input becomes
    // a variable so that the gradient reaching it can go on to the unit before.
    let last_input = match earlier.is_empty() {
        true => None,
        false => Some(Var::from_tensor(&h)?),
    };
    let output = net.forward_unit(last, last_input.as_ref().map_or(&h, Var::as_tensor), true)?;
    let (loss, correct) = loss(&output)?;
    let mut grads = loss.backward()?;
    let mut upstream = last_input.and_then(|input| grads.remove(input.as_tensor()));
    for (index, (&unit, input)) in earlier.iter().zip(inputs).enumerate().rev() {
        let Some(gradient) = upstream.take() else {
            // Nothing after this unit depends on it: it has no gradient in the plain pass.
            break;
        };
        let entries = store.owned_by(&[Owner::Unit(unit)]);
        let buffers: Vec<(Var, Tensor)> = entries
            .iter()
            .filter(|e| e.role == Role::Buffer)
            .map(|e| Ok((e.var.clone(), e.var.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        // The module's input gets no gradient: it is the images or a detached output.
        let variable = match index {
            0 => None,
            _ => Some(Var::from_tensor(&input)?),
        };
        let unit_input = variable.as_ref().map_or(&input, Var::as_tensor);
        let y = net.forward_unit(unit, unit_input, true)?;
        for (var, value) in buffers {
            var.set(&value)?;
        }
        let mut unit_grads = (y * gradient)?.sum_all()?.backward()?;
        upstream = variable.and_then(|v| unit_grads.remove(v.as_tensor()));
        for entry in entries.iter().filter(|e| e.role == Role::Param) {
            if let Some(g) = unit_grads.remove(entry.var.as_tensor()) {
                grads.insert(entry.var.as_tensor(), g);
            }
        }
    }
    Ok(Pass {
        output,
        loss,
        correct,
        grads,
    })
}
