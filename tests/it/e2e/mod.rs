//! End-to-end tests with real programs on loopback: the Distribution registry (`docker-registry`)
//! over TLS as the upstream for `gcr.io`, hoard as a binary in front of it, and skopeo, curl and
//! dockerd as clients that only reach `gcr.io` through hoard and verify hoard's certificate.
//! See `README.md` in this folder.

mod harness;

mod auth;
mod pulls;
