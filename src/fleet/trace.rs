//! The W3C `traceparent` a node puts on the requests it sends to an owner, so that one trace id
//! names the request in both nodes' logs.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// The header (W3C Trace Context).
pub(crate) const TRACEPARENT: &str = "traceparent";

/// A trace id and the id of the sending span, as `00-<32 hex>-<16 hex>-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    trace: [u8; 16],
    span: [u8; 8],
}

impl TraceParent {
    /// A new trace, with random ids (never all zero, which the format forbids).
    pub(crate) fn new() -> TraceParent {
        let random = SystemRandom::new();
        let mut ids = TraceParent {
            trace: [0; 16],
            span: [0; 8],
        };
        let _ = random.fill(&mut ids.trace);
        let _ = random.fill(&mut ids.span);
        ids.trace[0] |= 1;
        ids.span[0] |= 1;
        ids
    }

    /// Reads a `traceparent` value; `None` unless it is version 00 with valid ids.
    pub(crate) fn parse(text: &str) -> Option<TraceParent> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let mut ids = TraceParent {
            trace: [0; 16],
            span: [0; 8],
        };
        const_hex::decode_to_slice(trace, &mut ids.trace).ok()?;
        const_hex::decode_to_slice(span, &mut ids.span).ok()?;
        (ids.trace != [0; 16] && ids.span != [0; 8]).then_some(ids)
    }

    /// The trace id, 32 lowercase hex digits: what the logs show.
    pub(crate) fn trace_id(&self) -> String {
        const_hex::encode(self.trace)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (trace, span) = (const_hex::encode(self.trace), const_hex::encode(self.span));
        write!(f, "00-{trace}-{span}-01")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_and_bad_ones_are_refused() {
        let sent = TraceParent::new();
        let text = sent.to_string();
        assert_eq!(text.len(), 55, "{text}");
        assert_eq!(TraceParent::parse(&text), Some(sent));
        assert_ne!(TraceParent::new(), sent);
        let zero = format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16));
        for bad in [
            "",
            "01-aa-bb-01",
            "00-xyz-0123456789abcdef-01",
            zero.as_str(),
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
