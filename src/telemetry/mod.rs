//! What hoard tells its operators: the access log, the Prometheus metrics, and the activity the
//! status page shows (the last hour, recent and most pulled images).

pub mod access_log;
pub mod activity;
pub mod labels;
pub mod metrics;

pub use labels::{
    AuthFailure, ConnectionRefused, FillSkipped, PeerFailure, TierRead, TierWrite, Via,
};
pub use metrics::{Metrics, sum_series};
