//! Whole layers to and from bytes: [`Linear::to_bytes`] / [`Linear::from_bytes`] and
//! the [`DynamicLinear`] twins, plus file-path conveniences.
//!
//! A layer file is a packed-weights file (format version 2, [`crate::packed_format`])
//! with a layer record: bias, profile, ReLU, and the activation qparams (static) or
//! `reduce_range` and the input quantization mode (dynamic). Thread counts and the
//! backend choice are runtime settings of the process that loads the file and are not
//! stored. Loading goes through the
//! same validation and kernel choice as [`PackedWeights::from_bytes_for`] and then the
//! layer's own builder, so a loaded layer is exactly a layer built from the same
//! parts. Asking for the wrong kind (a weights-only file or a dynamic layer's file as
//! a [`Linear`], a weights-only or static file as a [`DynamicLinear`]) is an
//! [`Error::CorruptPacked`] naming what the file holds.
//!
//! The path helpers return [`std::io::Result`]: an invalid file is an
//! [`std::io::ErrorKind::InvalidData`] error wrapping the [`Error`].

use std::path::Path;
use std::sync::Arc;

use qlinear_reference::{Error, Result};

use crate::backend::Backend;
use crate::packed::{self, Borrow};
use crate::packed_format::{self, LayerRecord, LoadReport};
use crate::{DynamicLinear, Linear, PackedWeights};

fn wrong_kind(found: Option<&LayerRecord>, want_static: bool) -> Error {
    Error::CorruptPacked(match (found, want_static) {
        (None, true) => "weights-only file (no layer record): not a static Linear",
        (None, false) => "weights-only file (no layer record): not a DynamicLinear",
        (Some(_), true) => "a DynamicLinear's file: not a static Linear",
        (Some(_), false) => "a static Linear's file: not a DynamicLinear",
    })
}

fn invalid_data(e: Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

fn linear_from(
    loaded: (PackedWeights, LoadReport, Option<LayerRecord>),
) -> Result<(Linear, LoadReport)> {
    let (packed, report, layer) = loaded;
    match layer {
        Some(LayerRecord::Static {
            input,
            output,
            relu,
            profile,
            bias,
        }) => {
            let layer = Linear::from_packed(packed, input, output)
                .maybe_bias(bias)
                .relu(relu)
                .profile(profile)
                .build()?;
            Ok((layer, report))
        }
        other => Err(wrong_kind(other.as_ref(), true)),
    }
}

fn dynamic_from(
    loaded: (PackedWeights, LoadReport, Option<LayerRecord>),
) -> Result<(DynamicLinear, LoadReport)> {
    let (packed, report, layer) = loaded;
    match layer {
        Some(LayerRecord::Dynamic {
            reduce_range,
            input_quantization,
            relu,
            profile,
            bias,
        }) => {
            let layer = DynamicLinear::from_packed(packed)
                .maybe_bias(bias)
                .relu(relu)
                .profile(profile)
                .reduce_range(reduce_range)
                .input_quantization(input_quantization)
                .build()?;
            Ok((layer, report))
        }
        other => Err(wrong_kind(other.as_ref(), false)),
    }
}

impl Linear {
    /// Serializes the whole layer: packed weight, column sums, weight qparams, bias,
    /// profile, ReLU and the input / output qparams (format version 2).
    pub fn to_bytes(&self) -> Vec<u8> {
        let record = LayerRecord::Static {
            input: self.input_qparams(),
            output: self.output_qparams(),
            relu: self.relu(),
            profile: self.profile(),
            bias: self.bias().map(<[f32]>::to_vec),
        };
        packed_format::write(&self.packed().write_parts(), Some(&record))
    }

    /// Loads a layer written by [`Linear::to_bytes`] for the best local kernel
    /// (repacking when no local kernel uses the stored layout).
    pub fn from_bytes(bytes: &[u8]) -> Result<Linear> {
        Self::from_bytes_for(bytes, Backend::Auto).map(|(l, _)| l)
    }

    /// [`Linear::from_bytes`] for a given backend (kernel choice as in
    /// [`PackedWeights::from_bytes_for`]), with the [`LoadReport`].
    pub fn from_bytes_for(bytes: &[u8], backend: Backend) -> Result<(Linear, LoadReport)> {
        linear_from(packed::load(bytes, backend, Borrow::No)?)
    }

    /// Loads a layer from a shared owner of the file's bytes (an `Arc<Mmap>`, ...),
    /// using the packed data in place when possible (see
    /// [`PackedWeights::from_shared`]).
    pub fn from_shared<O>(owner: Arc<O>) -> Result<(Linear, LoadReport)>
    where
        O: AsRef<[u8]> + Send + Sync + 'static,
    {
        linear_from(packed::load_shared(owner, Backend::Auto)?)
    }

    /// Writes [`Linear::to_bytes`] to a file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// Reads a file written by [`Linear::save`]; an invalid file is an
    /// [`std::io::ErrorKind::InvalidData`] error wrapping the [`Error`].
    pub fn load(path: impl AsRef<Path>) -> std::io::Result<Linear> {
        Linear::from_bytes(&std::fs::read(path)?).map_err(invalid_data)
    }
}

impl DynamicLinear {
    /// Serializes the whole layer: packed weight, column sums, weight qparams, bias,
    /// profile, ReLU, reduce_range and the input quantization mode (format version 2).
    pub fn to_bytes(&self) -> Vec<u8> {
        let record = LayerRecord::Dynamic {
            reduce_range: self.reduce_range(),
            input_quantization: self.input_quantization(),
            relu: self.relu(),
            profile: self.profile(),
            bias: self.bias().map(<[f32]>::to_vec),
        };
        packed_format::write(&self.packed().write_parts(), Some(&record))
    }

    /// Loads a layer written by [`DynamicLinear::to_bytes`] for the best local kernel
    /// (repacking when no local kernel uses the stored layout).
    pub fn from_bytes(bytes: &[u8]) -> Result<DynamicLinear> {
        Self::from_bytes_for(bytes, Backend::Auto).map(|(l, _)| l)
    }

    /// [`DynamicLinear::from_bytes`] for a given backend, with the [`LoadReport`].
    pub fn from_bytes_for(bytes: &[u8], backend: Backend) -> Result<(DynamicLinear, LoadReport)> {
        dynamic_from(packed::load(bytes, backend, Borrow::No)?)
    }

    /// Loads a layer from a shared owner of the file's bytes, using the packed data in
    /// place when possible (see [`PackedWeights::from_shared`]).
    pub fn from_shared<O>(owner: Arc<O>) -> Result<(DynamicLinear, LoadReport)>
    where
        O: AsRef<[u8]> + Send + Sync + 'static,
    {
        dynamic_from(packed::load_shared(owner, Backend::Auto)?)
    }

    /// Writes [`DynamicLinear::to_bytes`] to a file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// Reads a file written by [`DynamicLinear::save`]; an invalid file is an
    /// [`std::io::ErrorKind::InvalidData`] error wrapping the [`Error`].
    pub fn load(path: impl AsRef<Path>) -> std::io::Result<DynamicLinear> {
        DynamicLinear::from_bytes(&std::fs::read(path)?).map_err(invalid_data)
    }
}

impl PackedWeights {
    /// Writes [`PackedWeights::to_bytes`] to a file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// Reads a file written by [`PackedWeights::save`] (or any layer's `save`: the
    /// layer record is validated and ignored); an invalid file is an
    /// [`std::io::ErrorKind::InvalidData`] error wrapping the [`Error`].
    pub fn load(path: impl AsRef<Path>) -> std::io::Result<PackedWeights> {
        PackedWeights::from_bytes(&std::fs::read(path)?).map_err(invalid_data)
    }
}
