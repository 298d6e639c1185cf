//! Messages between ranks as safetensors bytes: named tensors plus text metadata, the format
//! checkpoints use, parsed as data.

use std::collections::HashMap;

use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};

/// Named tensors and text fields.
#[derive(Debug, Default)]
pub struct Message {
    /// Tensors by name (e.g. `h` for activations, `labels`), any device until encoded.
    pub tensors: HashMap<String, Tensor>,
    /// Text values by name (numbers and JSON written as text), carried as the safetensors
    /// metadata.
    pub fields: HashMap<String, String>,
}

impl Message {
    /// A message with no tensors and no fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// The message with `tensor` added under `name` (a cheap clone sharing its storage),
    /// replacing any tensor of that name.
    pub fn with_tensor(mut self, name: &str, tensor: &Tensor) -> Self {
        self.tensors.insert(name.to_string(), tensor.clone());
        self
    }

    /// The message with `value`, written as text, added under `name`, replacing any field of
    /// that name.
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

    /// Splits off the tensors, to travel apart (GPU to GPU): the message left lists their
    /// names, types and shapes in the order returned, for [`Message::take_listed`].
    pub fn split_tensors(mut self) -> (Message, Vec<Tensor>) {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        let mut listed = Vec::with_capacity(names.len());
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            if let Some(t) = self.tensors.remove(&name) {
                let dims: Vec<String> = t.dims().iter().map(usize::to_string).collect();
                listed.push(format!("{name}:{}:{}", t.dtype().as_str(), dims.join("x")));
                tensors.push(t);
            }
        }
        self.fields.insert(LISTED.to_string(), listed.join(";"));
        (self, tensors)
    }

    /// The tensors [`Message::split_tensors`] listed (name, type, shape, in order), taken out
    /// of the fields; `None` when the tensors travelled in the message.
    pub fn take_listed(&mut self) -> Result<Option<Vec<(String, DType, Shape)>>> {
        let Some(listed) = self.fields.remove(LISTED) else {
            return Ok(None);
        };
        let unreadable = || message_error(format!("unreadable tensor list `{listed}`"));
        listed
            .split(';')
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let mut parts = entry.split(':');
                let (Some(name), Some(dtype), Some(dims), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(unreadable());
                };
                let dtype: DType = dtype.parse().map_err(|_| unreadable())?;
                let dims = dims
                    .split('x')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.parse::<usize>().map_err(|_| unreadable()))
                    .collect::<Result<Vec<usize>>>()?;
                Ok((name.to_string(), dtype, Shape::from(dims)))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
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

/// The field that lists tensors sent apart from the message.
const LISTED: &str = "tensors_sent_apart";

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

    #[test]
    fn tensors_sent_apart_are_listed_in_order() -> Result<()> {
        let h = Tensor::zeros((2, 16, 8, 8), DType::BF16, &Device::Cpu)?;
        let labels = Tensor::new(&[3u32, 7], &Device::Cpu)?;
        let (header, tensors) = Message::new()
            .with_tensor("labels", &labels)
            .with_tensor("h", &h)
            .with_field("stop", 0)
            .split_tensors();
        assert!(header.tensors.is_empty());
        assert_eq!(
            header.fields[LISTED], "h:bf16:2x16x8x8;labels:u32:2",
            "sorted by name, so both ends agree on the order"
        );
        assert_eq!(tensors[0].dims(), [2, 16, 8, 8]);
        assert_eq!(tensors[1].to_vec1::<u32>()?, [3, 7]);
        let mut back = Message::decode(&header.encode()?, &Device::Cpu)?;
        let listed = back.take_listed()?.expect("a list");
        assert_eq!(
            listed,
            [
                ("h".to_string(), DType::BF16, Shape::from((2, 16, 8, 8))),
                ("labels".to_string(), DType::U32, Shape::from(2)),
            ]
        );
        assert_eq!(back.field::<u8>("stop")?, 0);
        assert!(!back.fields.contains_key(LISTED));
        assert!(back.take_listed()?.is_none());
        // A scalar has no dimensions; a damaged list is refused, naming it.
        let (header, _) = Message::new()
            .with_tensor("s", &Tensor::new(2f32, &Device::Cpu)?)
            .split_tensors();
        let mut back = Message::decode(&header.encode()?, &Device::Cpu)?;
        assert_eq!(back.take_listed()?.expect("a list")[0].2, Shape::from(()));
        let mut bad = Message::new().with_field(LISTED, "h:f32:2xq");
        let e = bad.take_listed().expect_err("refused");
        assert!(e.to_string().contains("h:f32:2xq"), "{e}");
        Ok(())
    }
}
