//! What hoard tells its operators: the access log, the Prometheus metrics, and the activity the
//! status page shows (the last hour, recent and most pulled images).

pub(crate) mod access_log;
pub(crate) mod activity;
pub(crate) mod labels;
pub(crate) mod metrics;

pub(crate) use labels::{
    AuthFailure, ConnectionRefused, FillSkipped, PeerFailure, TierRead, TierWrite, Via,
};
pub(crate) use metrics::{Metrics, sum_series};
