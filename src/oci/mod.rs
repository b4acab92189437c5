//! The OCI distribution API as hoard sees it: digests, which call a request is, media types,
//! byte ranges and auth challenges. Vocabulary only: nothing here touches the network or the disk.

mod challenge;
mod digest;
mod media;
mod pattern;
mod range;
mod registry;
mod route;

pub(crate) use challenge::Challenge;
pub use digest::{Algorithm, Digest, Hasher};
pub(crate) use media::{DOCKER_MANIFEST_V2, accepts};
pub use pattern::RepoPattern;
pub use range::{MAX_RANGES, RANGE_FILL_AHEAD, Ranges, far_range, ranges};
pub use registry::{DOCKER_HUB, names_a_registry, registry_key};
pub use route::{Reference, Route, valid_repository, valid_tag};
