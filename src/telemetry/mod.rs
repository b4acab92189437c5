//! What hoard tells its operators: the access log, the metrics (Prometheus and the status page's
//! history).

pub mod access_log;
pub mod metrics;

pub use metrics::Metrics;
