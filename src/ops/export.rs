//! `hoard cache export`: images out of the cache folder into an OCI image-layout tar
//! ([`crate::ops::layout_tar`]) to carry across an air gap: every platform of an index, every blob
//! once. What the cache lacks is pulled through the running hoard with the client `hoard warm`
//! uses ([`crate::ops::pull`]); with `--offline` a missing piece is an error that names it. The
//! tar is written to `FILE.tmp` and renamed to `FILE` once whole; on any failure nothing is left.

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget};

use crate::config::Config;
use crate::error::Chain;
use crate::oci::{Digest, Reference};
use crate::ops::disk::{CacheDir, Kind};
use crate::ops::export_write::{Gathered, write_archive};
use crate::ops::imageref::ImageRef;
use crate::ops::layout_tar::{entry_for, full_name};
use crate::ops::manifest::{Manifest, OCI_INDEX};
use crate::ops::pull::{Puller, client};
use crate::ops::warm_error::WarmError;
use crate::ops::{OpsError, Outcome, io_error};

/// Indexes nested deeper than this are refused (an image index of images of indexes…).
const MAX_DEPTH: usize = 4;

/// What `hoard cache export` writes, and whether it may pull.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The tar to write.
    pub output: PathBuf,
    /// Only what the cache holds: a missing piece is an error.
    pub offline: bool,
    /// The proxy to pull missing pieces through, as `hoard warm --proxy`.
    pub proxy: Option<String>,
}

/// Why an image cannot be exported.
#[derive(Debug, thiserror::Error)]
enum ImageError {
    /// With `--offline`: the pieces the cache lacks, one line each.
    #[error("the cache lacks {}", .0.join("; "))]
    Missing(Vec<String>),
    #[error(transparent)]
    Pull(#[from] WarmError),
    #[error("manifest {0} is not a manifest or index")]
    BadManifest(Digest),
    #[error("manifest {0} nests indexes too deep")]
    TooDeep(Digest),
}

/// Exports `images` into `options.output`. An image that cannot be exported is said on stderr
/// and nothing is written (exit status 1).
pub async fn run(
    config: &Config,
    dir: &CacheDir,
    images: &[ImageRef],
    options: &ExportOptions,
    out: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let parent = match options.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".hoard-export-")
        .tempdir_in(&parent)
        .map_err(io_error("create a temp folder in", &parent))?;
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let fetch = Fetch {
        config,
        proxy: options.proxy.as_deref(),
        client: tokio::sync::OnceCell::new(),
        bars: &bars,
        staging: staging.path(),
    };
    let mut gathered = Vec::new();
    let mut trouble = false;
    for image in images {
        let walk = Walk {
            dir,
            image,
            fetch: (!options.offline).then_some(&fetch),
            puller: None,
            missing: Vec::new(),
        };
        match walk.gather().await {
            Ok(image) => gathered.push(image),
            Err(e) => {
                trouble = true;
                bars.suspend(|| eprintln!("hoard: export {image}: {}", Chain(&e)));
            }
        }
    }
    if trouble {
        writeln!(out, "nothing written")?;
        return Ok(Outcome::Trouble);
    }
    let output = options.output.clone();
    let bar = bars.add(ProgressBar::no_length());
    let task = {
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || write_archive(&output, &gathered, &bar))
    };
    let written = task
        .await
        .map_err(|e| OpsError::Output(std::io::Error::other(e)))??;
    bar.finish_and_clear();
    for (name, digest) in &written.images {
        writeln!(out, "exported {name} {digest}")?;
    }
    writeln!(
        out,
        "wrote {}: {} images, {} manifests, {} blobs, {}",
        options.output.display(),
        written.images.len(),
        written.manifests,
        written.blobs,
        HumanBytes(written.bytes)
    )?;
    Ok(Outcome::Done)
}

/// How missing pieces are pulled through hoard: one client for the whole export.
struct Fetch<'a> {
    config: &'a Config,
    proxy: Option<&'a str>,
    client: tokio::sync::OnceCell<reqwest::Client>,
    bars: &'a MultiProgress,
    /// Where pulled blobs wait until the tar is written.
    staging: &'a Path,
}

/// One image's walk from its tag or digest down to every blob of every platform.
struct Walk<'a> {
    dir: &'a CacheDir,
    image: &'a ImageRef,
    /// `None` with `--offline`.
    fetch: Option<&'a Fetch<'a>>,
    puller: Option<Puller<'a>>,
    /// What the cache lacks, with `--offline`.
    missing: Vec<String>,
}

impl<'a> Walk<'a> {
    async fn gather(mut self) -> Result<Gathered, ImageError> {
        let Some((digest, media_type, bytes)) = self.top().await? else {
            return Err(ImageError::Missing(self.missing));
        };
        let entry = entry_for(
            &full_name(self.image, &digest),
            &media_type,
            &digest,
            bytes.len() as u64,
        );
        let mut manifests = Vec::new();
        let mut wanted: Vec<(Digest, u64, String)> = Vec::new();
        let mut queue = vec![(digest, media_type, bytes, String::new(), 0)];
        while let Some((digest, media_type, bytes, label, depth)) = queue.pop() {
            let doc = Manifest::parse(&bytes).ok_or(ImageError::BadManifest(digest.clone()))?;
            if doc.is_index(&media_type) {
                if depth >= MAX_DEPTH {
                    return Err(ImageError::TooDeep(digest));
                }
                for child in &doc.manifests {
                    let Some(child_digest) = Digest::parse(&child.digest) else {
                        return Err(ImageError::BadManifest(digest));
                    };
                    let platform = child.platform.as_ref().map_or(String::new(), |p| {
                        let variant = p
                            .variant
                            .as_deref()
                            .map_or(String::new(), |v| format!("/{v}"));
                        format!("{}/{}{variant}", p.os, p.architecture)
                    });
                    let what = format!("manifest {child_digest} ({platform})");
                    if let Some((media_type, bytes)) = self.manifest(&child_digest, &what).await? {
                        queue.push((child_digest, media_type, bytes, platform, depth + 1));
                    }
                }
            } else {
                let config = doc.config.as_ref().map(|c| c.digest.as_str());
                for (blob, size) in doc.blobs() {
                    let kind = if Some(blob.to_string().as_str()) == config {
                        "config"
                    } else {
                        "layer"
                    };
                    let of = if label.is_empty() {
                        digest.to_string()
                    } else {
                        label.clone()
                    };
                    wanted.push((blob, size, format!("{kind} of {of}")));
                }
            }
            manifests.push((digest, bytes));
        }
        let blobs = self.blobs(wanted).await?;
        if !self.missing.is_empty() {
            return Err(ImageError::Missing(self.missing));
        }
        Ok(Gathered {
            entry,
            manifests,
            blobs,
        })
    }

    /// The image's own manifest (an index for a multi-platform image): by digest, or by the
    /// tag as the cache has it (the index line first, then the newest), else pulled.
    async fn top(&mut self) -> Result<Option<(Digest, String, Vec<u8>)>, ImageError> {
        let digest = match (&self.image.digest, &self.image.tag) {
            (Some(digest), _) => Some(digest.clone()),
            (None, Some(tag)) => self
                .dir
                .tag_lines(&self.image.registry, &self.image.repository, tag)
                .into_iter()
                .filter(|line| self.dir.entry(Kind::Manifest, &line.digest).is_some())
                .max_by_key(|line| (is_index_type(&line.media_type), line.fetched))
                .map(|line| line.digest),
            (None, None) => None,
        };
        if let Some(digest) = digest {
            let what = format!("manifest {digest}");
            let found = self.manifest(&digest, &what).await?;
            return Ok(found.map(|(media_type, bytes)| (digest, media_type, bytes)));
        }
        let tag = self
            .image
            .tag
            .clone()
            .unwrap_or_else(|| "latest".to_owned());
        let Some(puller) = self.puller().await? else {
            self.missing.push(format!("the tag {tag}"));
            return Ok(None);
        };
        let fetched = puller.manifest(&Reference::Tag(tag)).await?;
        Ok(Some((fetched.digest, fetched.media_type, fetched.bytes)))
    }

    /// A manifest from the cache (checked against its digest), else pulled; `None` when the
    /// cache lacks it and nothing may be pulled (noted as `what`).
    async fn manifest(
        &mut self,
        digest: &Digest,
        what: &str,
    ) -> Result<Option<(String, Vec<u8>)>, ImageError> {
        if let Some((media_type, bytes)) = self.dir.manifest_bytes(digest) {
            let mut hasher = digest.hasher();
            hasher.update(&bytes);
            if hasher.matches(digest) {
                return Ok(Some((media_type, bytes)));
            }
        }
        let Some(puller) = self.puller().await? else {
            self.missing.push(what.to_owned());
            return Ok(None);
        };
        let fetched = puller.manifest(&Reference::Digest(digest.clone())).await?;
        Ok(Some((fetched.media_type, fetched.bytes)))
    }

    /// The files of the blobs: the cache's, else pulled into the staging folder.
    async fn blobs(
        &mut self,
        wanted: Vec<(Digest, u64, String)>,
    ) -> Result<Vec<(Digest, PathBuf)>, ImageError> {
        let mut found = Vec::new();
        let mut absent: Vec<(Digest, u64)> = Vec::new();
        for (digest, size, what) in wanted {
            let pulled = self.fetch.map(|f| f.staging.join(digest.hex()));
            if let Some(entry) = self.dir.entry(Kind::Blob, &digest) {
                found.push((digest, entry.path));
            } else if let Some(path) = pulled.filter(|p| p.is_file()) {
                // Pulled whole for an earlier image of this export.
                found.push((digest, path));
            } else if self.fetch.is_none() {
                self.missing.push(format!("blob {digest} ({what})"));
            } else if !absent.iter().any(|(d, _)| *d == digest) {
                absent.push((digest, size));
            }
        }
        let Some(fetch) = self.fetch else {
            return Ok(found);
        };
        if absent.is_empty() {
            return Ok(found);
        }
        let Some(puller) = self.puller().await? else {
            return Ok(found);
        };
        puller.blobs(&absent, Some(fetch.staging)).await?;
        let pulled = absent
            .into_iter()
            .map(|(digest, _)| (fetch.staging.join(digest.hex()), digest));
        found.extend(pulled.map(|(path, digest)| (digest, path)));
        Ok(found)
    }

    /// The session with the registry through hoard, started on first need; `None` offline.
    async fn puller(&mut self) -> Result<Option<&mut Puller<'a>>, WarmError> {
        let Some(fetch) = self.fetch else {
            return Ok(None);
        };
        if self.puller.is_none() {
            let client = fetch
                .client
                .get_or_try_init(|| client(fetch.config, fetch.proxy))
                .await?;
            let mut puller = Puller::new(client, self.image, fetch.bars);
            puller.ping().await?;
            self.puller = Some(puller);
        }
        Ok(self.puller.as_mut())
    }
}

fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == crate::ops::manifest::DOCKER_LIST
}
