//! Writing the tar of `hoard cache export` ([`crate::ops::layout_tar`]): `oci-layout`,
//! `index.json`, then every manifest and blob once, each blob streamed from its file and checked
//! against its digest on the way, into `FILE.tmp`, synced and renamed to `FILE`; a failure leaves
//! no file behind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::oci::Digest;
use crate::ops::layout_tar::{
    INDEX_JSON, LayoutEntry, LayoutIndex, OCI_LAYOUT, OCI_LAYOUT_CONTENT,
};
use crate::ops::manifest::OCI_INDEX;
use crate::ops::{OpsError, io_error};

/// One image to write: its entry in `index.json` and its pieces.
pub(crate) struct Gathered {
    pub entry: LayoutEntry,
    pub manifests: Vec<(Digest, Vec<u8>)>,
    pub blobs: Vec<(Digest, PathBuf)>,
}

/// What went into the tar.
pub(crate) struct Written {
    pub images: Vec<(String, String)>,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Removes the partial tar unless it was completed.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Already gone is as good as removed.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes the tar to `<output>.tmp`, every blob once, checking each against its digest as it
/// streams from disk, then renames it to `output`.
pub(crate) fn write_archive(
    output: &Path,
    images: &[Gathered],
    bar: &ProgressBar,
) -> Result<Written, OpsError> {
    let mut manifests: BTreeMap<&Digest, &[u8]> = BTreeMap::new();
    let mut blobs: BTreeMap<&Digest, &Path> = BTreeMap::new();
    for image in images {
        manifests.extend(image.manifests.iter().map(|(d, b)| (d, b.as_slice())));
        blobs.extend(image.blobs.iter().map(|(d, p)| (d, p.as_path())));
    }
    let index = LayoutIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_owned()),
        manifests: images.iter().map(|i| clone_entry(&i.entry)).collect(),
    };
    let index_json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
    let mut tmp_name = output.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let file = std::fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
    let mut partial = Partial(Some(tmp.clone()));
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let write_error = io_error("write", &tmp);
    let mut bytes = 0;
    let result = (|| -> std::io::Result<u64> {
        append(&mut tar, OCI_LAYOUT, OCI_LAYOUT_CONTENT)?;
        append(&mut tar, INDEX_JSON, &index_json)?;
        for folder in ["blobs/", "blobs/sha256/"] {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, folder, std::io::empty())?;
        }
        for (digest, manifest) in &manifests {
            append(&mut tar, &blob_path(digest), manifest)?;
            bytes += manifest.len() as u64;
        }
        let total: u64 = blobs
            .values()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        bar.set_length(total);
        bar.set_style(
            ProgressStyle::with_template(
                "writing {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        for (digest, path) in &blobs {
            bytes += append_blob(&mut tar, digest, path, bar)?;
        }
        let mut writer = tar.into_inner()?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        Ok(bytes)
    })();
    let bytes = result.map_err(write_error)?;
    std::fs::rename(&tmp, output).map_err(io_error("rename into", output))?;
    partial.0 = None;
    Ok(Written {
        images: images
            .iter()
            .map(|i| {
                let name = i
                    .entry
                    .annotations
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_default();
                (name, i.entry.digest.clone())
            })
            .collect(),
        manifests: manifests.len(),
        blobs: blobs.len(),
        bytes,
    })
}

fn clone_entry(entry: &LayoutEntry) -> LayoutEntry {
    LayoutEntry {
        media_type: entry.media_type.clone(),
        digest: entry.digest.clone(),
        size: entry.size,
        annotations: entry.annotations.clone(),
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(size);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> std::io::Result<()> {
    tar.append_data(&mut file_header(data.len() as u64), path, data)
}

/// Streams a blob file into the tar, hashing it on the way: a cache file that does not match its
/// digest fails the export rather than go into the tar.
fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    digest: &Digest,
    path: &Path,
    bar: &ProgressBar,
) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = Hashing {
        inner: file.take(size),
        hasher: Some(digest.hasher()),
        bar,
    };
    tar.append_data(&mut file_header(size), blob_path(digest), &mut reader)?;
    let matches = reader.hasher.take().is_some_and(|h| h.matches(digest));
    if !matches {
        return Err(std::io::Error::other(format!(
            "{} does not match {digest} (run hoard cache verify)",
            path.display()
        )));
    }
    Ok(size)
}

/// A reader that hashes what it reads and moves the bar.
struct Hashing<'a, R> {
    inner: R,
    hasher: Option<crate::oci::Hasher>,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bar.inc(n as u64);
        Ok(n)
    }
}
