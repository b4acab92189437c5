//! containerd's CRI image service (`runtime.v1.ImageService`), called over gRPC on containerd's
//! unix socket as the kubelet calls it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{
    AuthConfig, Image, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Containerd, Context as _, PULL_TIMEOUT, Result, START_TIMEOUT, fail};

/// A gRPC client of one containerd's CRI image service, with its own single-threaded runtime:
/// the e2e tests are blocking code.
pub(crate) struct Cri {
    runtime: tokio::runtime::Runtime,
    images: ImageServiceClient<Channel>,
    /// containerd's process name in the scene, for messages.
    name: String,
}

/// Credentials in a pull request, as the kubelet sends those of a pod's `imagePullSecrets`:
/// `username` and `password`, no `server_address`.
pub(crate) struct PullAuth<'a> {
    /// The registry user.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
}

impl Cri {
    /// Connects to `ctd`'s socket and waits until the CRI plugin answers (it refuses calls until
    /// it has initialised, a moment after the socket is up).
    pub(crate) fn connect(ctd: &Containerd) -> Result<Cri> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime for the CRI client")?;
        let sock = ctd.sock.clone();
        // The URI is not used: every connection goes to the socket.
        let channel = runtime
            .block_on(
                Endpoint::from_static("http://containerd.invalid").connect_with_connector(
                    tower::service_fn(move |_: Uri| {
                        let sock: PathBuf = sock.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(sock).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }),
                ),
            )
            .context(format!("connecting to {}", ctd.sock.display()))?;
        let cri = Cri {
            runtime,
            images: ImageServiceClient::new(channel),
            name: ctd.name.clone(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut images = cri.images.clone();
            let listed = cri
                .runtime
                .block_on(images.list_images(ListImagesRequest::default()));
            match listed {
                Ok(_) => return Ok(cri),
                Err(status) if Instant::now() > deadline => {
                    return fail(format!(
                        "{}'s CRI image service did not answer within {START_TIMEOUT:?}: {status}",
                        cri.name
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `PullImage` of `reference` with `auth`: the image ID containerd answers (the config's
    /// digest), or the refusal (`Err` with the gRPC status) as an outcome, not a failed step.
    pub(crate) fn pull(
        &self,
        reference: &str,
        auth: Option<&PullAuth<'_>>,
    ) -> Result<std::result::Result<String, tonic::Status>> {
        let request = PullImageRequest {
            image: Some(spec(reference)),
            auth: auth.map(|auth| AuthConfig {
                username: auth.user.to_owned(),
                password: auth.password.to_owned(),
                ..AuthConfig::default()
            }),
            sandbox_config: None,
        };
        let mut images = self.images.clone();
        let pulled = self.runtime.block_on(async {
            tokio::time::timeout(PULL_TIMEOUT, images.pull_image(request)).await
        });
        let Ok(answer) = pulled else {
            return fail(format!(
                "CRI PullImage {reference} ({}) did not finish within {PULL_TIMEOUT:?}",
                self.name
            ));
        };
        Ok(answer.map(|response| response.into_inner().image_ref))
    }

    /// `ImageStatus` of `reference`: the image, or None when containerd has none by that name.
    pub(crate) fn status(&self, reference: &str) -> Result<Option<Image>> {
        let mut images = self.images.clone();
        let answer = self
            .runtime
            .block_on(images.image_status(ImageStatusRequest {
                image: Some(spec(reference)),
                verbose: false,
            }))
            .context(format!("CRI ImageStatus {reference} ({})", self.name))?;
        Ok(answer.into_inner().image)
    }

    /// `RemoveImage` of `reference`. containerd deletes the last name of an image synchronously,
    /// garbage collection included: its blobs are gone from the content store when this returns.
    pub(crate) fn remove(&self, reference: &str) -> Result {
        let mut images = self.images.clone();
        self.runtime
            .block_on(images.remove_image(RemoveImageRequest {
                image: Some(spec(reference)),
            }))
            .context(format!("CRI RemoveImage {reference} ({})", self.name))?;
        Ok(())
    }
}

/// An image spec naming `reference`, a container's `image` as the kubelet passes it on.
fn spec(reference: &str) -> ImageSpec {
    ImageSpec {
        image: reference.to_owned(),
        ..ImageSpec::default()
    }
}
