//! The library's one error type. Every variant names what is wrong (node, tensor, shape, dtype) so that a
//! bad model file or a bad call is diagnosable from the message alone.

use std::prelude::v1::*;

/// Result alias used across the library.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong while loading, planning or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container (safetensors) is malformed: bad header, offsets out of range, sizes that do not match.
    #[error("model file is not a valid safetensors container: {0}")]
    Container(String),
    /// The container is fine but the ResEdge metadata (format version, graph JSON) is missing or invalid.
    #[error("model metadata is invalid: {0}")]
    Metadata(String),
    /// The model file was written by a newer (or unknown) format version.
    #[error("unsupported model format version {found} (this build reads version {supported})")]
    Version { found: u32, supported: u32 },
    /// A tensor the graph needs is missing or has the wrong dtype or shape.
    #[error("tensor `{name}`: {what}")]
    Tensor { name: String, what: String },
    /// A node is inconsistent: bad attribute, unknown input, shape that does not fit.
    #[error("node `{node}`: {what}")]
    Node { node: String, what: String },
    /// The graph as a whole is invalid (no nodes, cycles, duplicate names, bad output).
    #[error("graph is invalid: {0}")]
    Graph(String),
    /// A size that would overflow or exceed the planner's limits (hostile dims, absurd arena).
    #[error("size limit exceeded: {0}")]
    TooLarge(String),
    /// The caller passed data of the wrong size or shape.
    #[error("bad input: {0}")]
    Input(String),
    /// No kernel in the registry supports this node on this CPU.
    #[error("no kernel for node `{node}`: {what}")]
    NoKernel { node: String, what: String },
    /// An architecture description (zoo) is invalid or unknown.
    #[error("architecture: {0}")]
    Arch(String),
    /// An image could not be decoded or preprocessed (feature `image`).
    #[error("image: {0}")]
    Image(String),
    /// An offload backend is not compiled in, or its device, driver or library is missing.
    #[error("backend {backend} unavailable: {why}")]
    BackendUnavailable { backend: &'static str, why: String },
    /// An offload device failed while preparing or running (driver error, lost device).
    #[error("backend {backend}: {what}")]
    Backend { backend: &'static str, what: String },
    /// An I/O error (std only).
    #[cfg(feature = "std")]
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn node(node: &str, what: impl Into<String>) -> Self {
        Error::Node { node: node.into(), what: what.into() }
    }
    pub(crate) fn tensor(name: &str, what: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), what: what.into() }
    }
}
