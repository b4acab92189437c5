//! End-to-end tests with real programs on loopback: the Distribution registry (`docker-registry`)
//! over TLS as the upstream for `gcr.io`, hoard as a binary in front of it, and skopeo, curl,
//! dockerd and containerd (by `ctr`, and by its CRI plugin as the kubelet asks it) as clients that
//! only reach `gcr.io` through hoard, as a proxy whose certificate they verify or as a registry
//! mirror; and hoard's container image, built without a registry and run by dockerd.
//! See `README.md` in this folder.

mod harness;

mod airgap;
mod auth;
mod cri;
mod fleet;
mod image;
mod mirror;
mod pulls;
mod retention;
