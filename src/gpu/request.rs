//! What a sandbox asks for: no GPU, a number of GPUs, or named host GPUs; exclusive or shared.

use std::fmt;

use crate::error::list_gpus;

/// A GPU request: none, a number of GPUs (chosen among the free ones), or these host GPUs
/// (the N of `/dev/nvidiaN`); exclusive unless shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuRequest {
    pub(super) select: Select,
    pub(super) share: bool,
}

/// Which GPUs a request wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Select {
    #[default]
    None,
    /// This many, whichever are free.
    Count(u32),
    /// These host GPUs, in the order given.
    Devices(Vec<u32>),
}

impl GpuRequest {
    /// No GPU.
    pub fn none() -> GpuRequest {
        GpuRequest::default()
    }
    /// `n` GPUs, whichever are free.
    pub fn count(n: u32) -> GpuRequest {
        GpuRequest {
            select: if n == 0 {
                Select::None
            } else {
                Select::Count(n)
            },
            share: false,
        }
    }
    /// These host GPUs.
    pub fn devices(indices: &[u32]) -> GpuRequest {
        GpuRequest {
            select: if indices.is_empty() {
                Select::None
            } else {
                Select::Devices(indices.to_vec())
            },
            share: false,
        }
    }
    /// Shared: the GPUs may also be held by other shared leases (never by an exclusive one).
    pub fn share(mut self, on: bool) -> GpuRequest {
        self.share = on;
        self
    }
    /// How many GPUs it asks for.
    pub fn len(&self) -> usize {
        match &self.select {
            Select::None => 0,
            Select::Count(n) => *n as usize,
            Select::Devices(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_shared(&self) -> bool {
        self.share
    }
    /// The host GPUs asked for by index, if it names them.
    pub fn indices(&self) -> Option<&[u32]> {
        match &self.select {
            Select::Devices(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for GpuRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.select {
            Select::None => write!(f, "no GPU")?,
            Select::Count(1) => write!(f, "1 GPU")?,
            Select::Count(n) => write!(f, "{n} GPUs")?,
            Select::Devices(v) => write!(f, "GPU {}", list_gpus(v))?,
        }
        if self.share {
            write!(f, " (shared)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_describe_themselves() {
        assert_eq!(GpuRequest::count(0), GpuRequest::none());
        assert_eq!(GpuRequest::devices(&[]), GpuRequest::none());
        assert_eq!(GpuRequest::count(2).to_string(), "2 GPUs");
        assert_eq!(
            GpuRequest::devices(&[0, 2]).share(true).to_string(),
            "GPU 0, 2 (shared)"
        );
        assert_eq!(GpuRequest::devices(&[3, 1]).len(), 2);
    }
}
