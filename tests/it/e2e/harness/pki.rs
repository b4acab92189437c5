//! The test PKI, made by the openssl CLI at test time: a CA and server certificates signed by it.

use std::fs;
use std::path::PathBuf;

use super::{Context as _, DOCKER_HUB_HOST, REGISTRY_HOST, Result, Scene, Tools};

/// The test CA and the upstream registry's certificate (for `gcr.io`, `registry-1.docker.io` and
/// 127.0.0.1).
pub(crate) struct Pki {
    /// The test CA certificate (PEM); hoard trusts it through `upstream.extra_ca_files`.
    pub ca_crt: PathBuf,
    /// The test CA's private key, for [`make_server_cert`].
    pub ca_key: PathBuf,
    /// A folder holding only `ca.crt`, for skopeo's `--cert-dir` when talking to the registry.
    pub ca_cert_dir: PathBuf,
    /// The registry's certificate and key.
    pub server_crt: PathBuf,
    /// The registry's private key.
    pub server_key: PathBuf,
}

/// Generates a P-256 CA and a server certificate signed by it.
pub(crate) fn make_pki(scene: &mut Scene, tools: &Tools) -> Result<Pki> {
    let dir = scene.dir("pki")?;
    let ca_key = dir.join("test-ca.key");
    let ca_crt = dir.join("test-ca.crt");
    scene.exec_text(
        "openssl make test CA",
        tools
            .command("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=hoard e2e test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt),
    )?;

    // skopeo's cert dirs take *.crt as CAs, and a *.key without a matching *.cert is an error:
    // give it a folder holding nothing but the CA certificate.
    let ca_cert_dir = scene.dir("pki/test-ca-certs")?;
    fs::copy(&ca_crt, ca_cert_dir.join("ca.crt")).context("copying the test CA")?;
    let mut pki = Pki {
        ca_crt,
        ca_key,
        ca_cert_dir,
        server_crt: PathBuf::new(),
        server_key: PathBuf::new(),
    };
    let (server_crt, server_key) = make_server_cert(
        scene,
        tools,
        &pki,
        "server",
        &format!("DNS:{REGISTRY_HOST},DNS:{DOCKER_HUB_HOST},IP:127.0.0.1"),
    )?;
    pki.server_crt = server_crt;
    pki.server_key = server_key;
    Ok(pki)
}

/// A P-256 server certificate signed by the test CA for `subject_alt_names` (openssl syntax,
/// `DNS:a,IP:b`), as `pki/<stem>.crt` and `pki/<stem>.key`.
pub(crate) fn make_server_cert(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    stem: &str,
    subject_alt_names: &str,
) -> Result<(PathBuf, PathBuf)> {
    let dir = scene.dir("pki")?;
    let key = dir.join(format!("{stem}.key"));
    let csr = dir.join(format!("{stem}.csr"));
    let crt = dir.join(format!("{stem}.crt"));
    let ext = dir.join(format!("{stem}.ext"));
    fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName={subject_alt_names}\n"
        ),
    )
    .context("writing the extensions file")?;
    scene.exec_text(
        &format!("openssl make {stem} key"),
        tools
            .command("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", &format!("/CN={stem}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    )?;
    scene.exec_text(
        &format!("openssl sign {stem} cert"),
        tools
            .command("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&pki.ca_crt)
            .arg("-CAkey")
            .arg(&pki.ca_key)
            .arg("-CAserial")
            .arg(dir.join("test-ca.srl"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt),
    )?;
    Ok((crt, key))
}
