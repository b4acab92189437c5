//! hoard's account can be an Azure managed identity's (`source = "azure-identity"`): the Entra
//! token from IMDS, asked straight, exchanged at the registry for an ACR refresh token that logs
//! in as the null-GUID user. Neither token reaches the log.

use super::*;

/// The managed identity's Entra token, as the IMDS stand-in gives it.
const ENTRA_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.entra-token-sekrit.c2ln";

/// The refresh token the registry's exchange gives for it.
const REFRESH_TOKEN: &str = "acr-refresh-token-sekrit";

/// The user ACR takes a refresh token with.
const NULL_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Whether a (lowercased) request head is IMDS's token request as Azure's clients send it, for
/// the user-assigned identity `app-1`.
fn imds_token_request(head: &str) -> bool {
    let request_line = head.lines().next().unwrap_or_default();
    request_line.starts_with("get /metadata/identity/oauth2/token?")
        && request_line.contains("api-version=")
        && request_line.contains("resource=https%3a%2f%2fmanagement.azure.com%2f")
        && request_line.contains("client_id=app-1")
        && head.contains("\r\nmetadata: true\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_can_be_an_azure_managed_identitys_refresh_token() {
    init();
    let registry = Registry::start().await;
    registry.require("team/private", "Bearer tok");
    let login = hoard::http::basic_header(NULL_USER, REFRESH_TOKEN);
    registry.serve_token_to(&login, r#"{"token":"tok","expires_in":300}"#);
    registry.serve_exchange(ENTRA_TOKEN, REFRESH_TOKEN);
    let (imds, asked) = metadata_server(
        imds_token_request,
        // IMDS sends its numbers as strings.
        vec![format!(
            r#"{{"access_token":"{ENTRA_TOKEN}","expires_in":"3599","expires_on":"1700003599","resource":"https://management.azure.com/","token_type":"Bearer"}}"#
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = Proxy::builder(&registry).upstream(&format!(
        "[[upstream.credentials]]\nhost = \"{REGISTRY}\"\nsource = \"azure-identity\"\n\
         endpoint = \"{imds}\"\nclient_id = \"app-1\"\ntenant = \"contoso\"\n"
    ));
    let script = "exec \"$0\" serve --config \"$1\"";
    let hoard = start_process(config, dir.path(), script).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;

    assert_eq!(asked.load(SeqCst), 1, "one Entra token from IMDS");
    assert_eq!(
        registry.count("POST", "/oauth2/exchange"),
        1,
        "one exchange"
    );
    let exchange = registry
        .seen()
        .into_iter()
        .find(|s| s.path == "/oauth2/exchange")
        .unwrap();
    assert_eq!(
        exchange.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert!(
        registry.token_logins().contains(&Some(login)),
        "the token service saw the refresh token as the null-GUID user's password"
    );
    let log = hoard.log();
    for secret in [ENTRA_TOKEN, REFRESH_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn azure_identity_keys_go_with_that_source_alone() {
    let block =
        |lines: &str| format!("[[upstream.credentials]]\nhost = \"example.azurecr.io\"\n{lines}\n");
    let azure = "source = \"azure-identity\"";
    for (lines, needle) in [
        (
            format!("{azure}\nusername = \"u\""),
            "no username or password",
        ),
        (
            format!("{azure}\npassword = \"p\""),
            "no username or password",
        ),
        (
            "endpoint = \"127.0.0.1:8080\"\nusername = \"u\"\npassword = \"p\"".to_owned(),
            "are for source = \"azure-identity\"",
        ),
        (
            "source = \"gcp-metadata\"\nclient_id = \"app-1\"".to_owned(),
            "are for source = \"azure-identity\"",
        ),
        (
            format!("{azure}\nendpoint = \"http://169.254.169.254\""),
            "not an IMDS address",
        ),
        (
            format!("{azure}\nendpoint = \"169.254.169.254/metadata\""),
            "not an IMDS address",
        ),
        (format!("{azure}\nendpoint = \"\""), "not an IMDS address"),
        (
            format!("{azure}\nendpoint = \"imds .local\""),
            "not an IMDS address",
        ),
        (format!("{azure}\ntenant = \"\""), "tenant is empty"),
    ] {
        assert_config_error(&serve_with(&block(&lines)), needle);
    }
}
