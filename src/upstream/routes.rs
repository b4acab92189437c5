//! Which way each upstream connection goes: through the parent proxy or straight.

use std::collections::HashSet;

use crate::config::UpstreamClients;
use crate::net::{NoProxy, Parent};

/// Which way each upstream connection goes: through the parent, or straight when there is no
/// parent, the host is in `no_proxy`, or `upstream.resolve` pins its address (the operator chose
/// where it is, and the parent would resolve the name itself).
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    parent: Option<Parent>,
    no_proxy: NoProxy,
    pinned: HashSet<String>,
}

impl Routes {
    /// The routes of a configuration.
    pub(crate) fn new(config: &UpstreamClients) -> Routes {
        Routes {
            parent: config.parent.clone(),
            no_proxy: config.no_proxy.clone(),
            pinned: config.resolve.keys().cloned().collect(),
        }
    }

    /// The parent to dial `host` (no port) through, or `None` to connect straight.
    pub(crate) fn parent_for(&self, host: &str) -> Option<&Parent> {
        let parent = self.parent.as_ref()?;
        let bare = crate::net::unbracket(host);
        let direct =
            self.pinned.contains(&bare.to_ascii_lowercase()) || self.no_proxy.matches(bare);
        (!direct).then_some(parent)
    }
}
