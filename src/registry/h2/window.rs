//! The client's connection-level send window (RFC 9113 §6.9.1), which hyper and the front
//! share on one h2 connection.

/// Of new window (in a connection WINDOW_UPDATE, beyond what it gives back), what hyper keeps
/// at least before the front takes any (see [`Window`]): a long, fast link needs a large
/// window for a blob, and a client of hyper's own opens with 5 MiB.
const HYPER_KEEPS: u64 = 4 << 20;

/// The largest window RFC 9113 allows.
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The client's connection-level send window (RFC 9113 §6.9.1), shared by hyper and the front.
/// hyper counts only the WINDOW_UPDATEs it is given, so the front keeps part of each as its
/// `slack` and spends only that on its answers; hyper never sends more than the client allows.
/// What a connection WINDOW_UPDATE gives back is shared in proportion to what each sent and
/// has not had back; what it adds beyond that (Go's and nghttp2's clients open with 1 GiB) is
/// halved, hyper keeping at least [`HYPER_KEEPS`] of it. So hyper is never starved, and a
/// front that answers many requests keeps answering.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// What the front may send.
    pub slack: u32,
    /// Bytes the front sent that no WINDOW_UPDATE has given back yet.
    front_out: u64,
    /// The same of hyper's.
    hyper_out: u64,
}

impl Window {
    /// What hyper is given of a connection WINDOW_UPDATE of `increment`; the rest is kept.
    pub(super) fn split(&mut self, increment: u32) -> u32 {
        let increment64 = u64::from(increment);
        let out = self.front_out + self.hyper_out;
        let back = increment64.min(out);
        let front_back = (u128::from(back) * u128::from(self.front_out))
            .checked_div(u128::from(out))
            .map_or(0, |b| u64::try_from(b).unwrap_or(0));
        self.front_out = self.front_out.saturating_sub(front_back);
        self.hyper_out = self.hyper_out.saturating_sub(back - front_back);
        let fresh = increment64 - back;
        let fresh_kept = (fresh / 2).min(fresh.saturating_sub(HYPER_KEEPS));
        let room = u64::from(MAX_WINDOW - self.slack);
        let kept = u32::try_from((front_back + fresh_kept).min(room)).unwrap_or(0);
        self.slack += kept;
        increment - kept
    }

    /// Notes `n` bytes of DATA the front sent (within its slack).
    pub(super) fn spend(&mut self, n: u32) {
        self.slack -= n;
        self.front_out += u64::from(n);
    }

    /// Notes `n` bytes of DATA payload hyper sent.
    pub(super) fn hyper_sent(&mut self, n: usize) {
        self.hyper_out += n as u64;
    }
}
