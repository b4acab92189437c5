//! `hoard warm`: pulls images through a running hoard so that later pulls are hits, with the
//! registry client of [`crate::ops::pull`]: the manifest by tag, the platform's manifest out of
//! an index, then the config and every layer checked against its digest. Nothing is kept here:
//! hoard keeps it.

use std::io::Write;

use indicatif::{HumanBytes, MultiProgress, ProgressDrawTarget};

use crate::config::Config;
use crate::error::Chain;
use crate::oci::{Digest, Reference};
use crate::ops::Outcome;
use crate::ops::imageref::ImageRef;
use crate::ops::manifest::Platform;
use crate::ops::pull::{Puller, client};
use crate::ops::warm_error::WarmError;

/// What `hoard warm` pulls, and through which proxy.
#[derive(Debug, Clone, Default)]
pub struct WarmOptions {
    /// The proxy URL; when absent, `http://<proxy.listen>` of the config, or the address a
    /// running hoard noted in the cache folder ([`crate::ops::running`]).
    pub proxy: Option<String>,
    /// The platform picked out of an index.
    pub platform: Platform,
}

/// What a warmed image came to.
#[derive(Debug, Clone)]
pub(crate) struct Warmed {
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub digest: Digest,
    pub blobs: usize,
    pub bytes: u64,
}

/// Warms each image in turn; a failed image is reported on stderr as one line and the others
/// still go. Progress bars are drawn on stderr when it is a terminal.
pub async fn run(config: &Config, images: &[ImageRef], options: &WarmOptions) -> Outcome {
    let client = match client(config, options.proxy.as_deref()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("hoard: {}", Chain(&e));
            return Outcome::Trouble;
        }
    };
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut trouble = false;
    for image in images {
        if !config
            .intercept
            .matches(image.registry.split(':').next().unwrap_or(""))
        {
            bars.suspend(|| {
                eprintln!(
                    "hoard: note: {} is not in intercept.hosts; hoard will not keep it",
                    image.registry
                );
            });
        }
        let result = warm(Puller::new(&client, image, &bars), image, &options.platform).await;
        // Lines go around the bars, so they stay readable on a terminal and plain in a pipe.
        bars.suspend(|| match result {
            Ok(w) => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(
                    stdout,
                    "warmed {image} {} ({} blobs, {})",
                    w.digest,
                    w.blobs,
                    HumanBytes(w.bytes)
                );
            }
            Err(e) => {
                trouble = true;
                eprintln!("hoard: warm {image}: {}", Chain(&e));
            }
        });
    }
    Outcome::from_trouble(trouble)
}

/// Pulls one image through hoard: the manifest, the platform's out of an index, and its blobs.
async fn warm(
    mut puller: Puller<'_>,
    image: &ImageRef,
    platform: &Platform,
) -> Result<Warmed, WarmError> {
    puller.ping().await?;
    let top = puller.manifest(&image.reference()).await?;
    let manifest = if top.doc.is_index(&top.media_type) {
        let entry = top
            .doc
            .entry_for(platform)
            .ok_or_else(|| WarmError::NoPlatform {
                platform: platform.to_string(),
                available: top.doc.platforms().join(", "),
            })?;
        let url = puller.url(&format!("{}/manifests/{}", image.repository, entry.digest));
        let digest = Digest::parse(&entry.digest).ok_or_else(|| WarmError::Manifest {
            url: url.clone(),
            reason: format!("the index lists a bad digest {:?}", entry.digest),
        })?;
        let child = puller.manifest(&Reference::Digest(digest)).await?;
        if child.doc.is_index(&child.media_type) {
            return Err(WarmError::Manifest {
                url,
                reason: "an index inside an index".to_owned(),
            });
        }
        child.doc
    } else {
        top.doc
    };
    let blobs: Vec<(Digest, u64)> = manifest.blobs().collect();
    let bytes = puller.blobs(&blobs, None).await?;
    Ok(Warmed {
        digest: top.digest,
        blobs: blobs.len(),
        bytes,
    })
}
