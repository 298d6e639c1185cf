//! Messages between ranks as safetensors bytes: named tensors plus text metadata, the format
//! checkpoints use, parsed as data.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Named tensors and text fields.
#[derive(Debug, Default)]
pub struct Message {
    pub tensors: HashMap<String, Tensor>,
    pub fields: HashMap<String, String>,
}

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_tensor(mut self, name: &str, tensor: &Tensor) -> Self {
        self.tensors.insert(name.to_string(), tensor.clone());
        self
    }

    pub fn with_field(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.insert(name.to_string(), value.to_string());
        self
    }

    /// The bytes that [`Message::decode`] reads back.
    pub fn encode(&self) -> Result<Vec<u8>> {
        // Contiguous CPU copies: safetensors reads the raw bytes.
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<Vec<(String, Tensor)>>>()?;
        let fields = (!self.fields.is_empty()).then(|| self.fields.clone());
        safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), fields)
            .map_err(|e| message_error(format!("cannot encode a message: {e}")))
    }

    /// A message from the bytes of [`Message::encode`], its tensors on `device`.
    pub fn decode(bytes: &[u8], device: &Device) -> Result<Self> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| message_error(format!("a message does not decode: {e}")))?;
        let fields = metadata.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        Ok(Message { tensors, fields })
    }

    /// Tensor `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| message_error(format!("a message lacks tensor `{name}`")))
    }

    /// Field `name` parsed, or an error naming it.
    pub fn field<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        self.fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| message_error(format!("a message lacks a readable field `{name}`")))
    }
}

fn message_error(problem: String) -> Error {
    Error::InvalidSetting {
        setting: "message between ranks",
        value: problem,
        valid: "a message of this auglocal (every rank must run the same version)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_written() -> Result<()> {
        let h = Tensor::new(&[[1.5f32, -2.0], [0.25, 3.0]], &Device::Cpu)?;
        let labels = Tensor::new(&[3u32, 7], &Device::Cpu)?;
        let bytes = Message::new()
            .with_tensor("h", &h.t()?)
            .with_tensor("labels", &labels)
            .with_field("losses", "[2.5,1.25]")
            .with_field("value", f32::NAN)
            .encode()?;
        let back = Message::decode(&bytes, &Device::Cpu)?;
        assert_eq!(
            back.tensor("h")?.to_vec2::<f32>()?,
            [[1.5, 0.25], [-2.0, 3.0]]
        );
        assert_eq!(back.tensor("labels")?.to_vec1::<u32>()?, [3, 7]);
        assert_eq!(back.field::<String>("losses")?, "[2.5,1.25]");
        assert!(back.field::<f32>("value")?.is_nan());
        assert!(back.field::<usize>("missing").is_err());
        assert!(Message::decode(b"garbage", &Device::Cpu).is_err());
        Ok(())
    }
}
