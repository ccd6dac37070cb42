//! OpenAPI 3.0 and 3.1 documents to API definitions, and back.
//!
//! # Import
//!
//! | OpenAPI | Gatehouse |
//! |---|---|
//! | `info.title`, `info.version`, `info.description` | name, version, description |
//! | `--context`, else `x-gatehouse-context` (root or `info`) | context |
//! | `paths` × operations (`get`, `put`, `post`, `delete`, `options`, `head`, `patch`) | resources, path templates kept (`{param}` is one segment) |
//! | `security` (operation, else root): `[]` or `[{}]` | authentication off for that resource |
//! | … a requirement of an `oauth2` / `openIdConnect` scheme, or `http` `bearer` | authentication on; the scopes of the alternatives are the resource's scopes (any one of them) |
//! | no `security` anywhere | authentication on, no scopes (a gateway's default, as WSO2's) |
//! | WSO2's `x-auth-type: None`, `x-throttling-tier`, `x-scope` on an operation | authentication off, resource tier, a scope |
//! | `--production-url`, else `x-wso2-production-endpoints`, else the first of `servers` (variables at their defaults) | production endpoints; sandbox from `--sandbox-url` or `x-wso2-sandbox-endpoints` |
//! | local `$ref`s (`#/...`) | followed (path items), and every one checked |
//!
//! What Gatehouse cannot represent is a [`Problem`] at its JSON pointer, and any
//! problem means nothing is imported: `trace` operations, path templates the gateway
//! cannot route (a parameter inside a segment, `{a}{b}`, a trailing `/`), per-path or
//! per-operation `servers`, security it cannot enforce (API keys, HTTP basic, mutual
//! TLS, several schemes at once, a requirement needing several scopes at once,
//! optional authentication), `webhooks` and `callbacks` (calls the API makes, not calls
//! a gateway routes), external or broken `$ref`s, and Swagger 2.0.
//! Schemas, parameters, responses, examples and links describe calls the gateway
//! passes through unchanged, so they are not part of the definition.
//!
//! # Export
//!
//! [`export`] writes the gateway's view of an API: one server, the gateway's base path
//! `/<context>/<version>`; every resource as an operation, its path parameters
//! declared; one OAuth2 client-credentials scheme whose token URL is token-service's,
//! with the API's scopes; each resource's security (none, a token, or any one of its
//! scopes). An application developer's tools work with it against the gateway as it is.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_domain::validate;
use gatehouse_proto::events::{ApiDefinition, EndpointGroup, Endpoints, Resource};
use serde_json::{Map, Value, json};

use crate::document::{self, child};
use crate::{ImportError, Problem};

/// OpenAPI's operation keys that are Gatehouse methods, in the order resources are
/// listed.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("options", "OPTIONS"),
    ("head", "HEAD"),
    ("patch", "PATCH"),
];

/// What the caller adds to a document (an admin's flags).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The API's context; else the document's `x-gatehouse-context`.
    pub context: Option<String>,
    /// Production backend URLs; else the document's.
    pub production_urls: Vec<String>,
    /// Sandbox backend URLs; else the document's `x-wso2-sandbox-endpoints`.
    pub sandbox_urls: Vec<String>,
    /// Subscription tiers offered (empty: the domain's default, Unlimited).
    pub subscription_tiers: Vec<String>,
    /// Most resources (operations) one API may have; 0: no limit.
    pub max_resources: usize,
}

impl ImportOptions {
    /// Why `count` operations are more than one API may have, if they are.
    pub(crate) fn too_many_resources(&self, count: usize) -> Option<String> {
        (self.max_resources > 0 && count > self.max_resources).then(|| {
            format!(
                "{count} operations: an API may have at most {} (control's --max-import-resources)",
                self.max_resources
            )
        })
    }
}

/// An API definition read from a document, and where each part came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedApi {
    pub definition: ApiDefinition,
    /// The JSON pointer of the operation each resource came from, by resource index.
    pub resource_pointers: Vec<String>,
    /// The JSON pointers of the name, version and context and endpoints, by the
    /// domain's field name (`definition.name`, ...), when the document gave them.
    pub field_pointers: BTreeMap<String, String>,
}

impl ImportedApi {
    /// The JSON pointer of what the domain's `field` (e.g.
    /// `definition.resources[3].throttling_tier`) came from, if the document gave it.
    pub fn pointer_of(&self, field: &str) -> Option<String> {
        if let Some(rest) = field.strip_prefix("definition.resources[") {
            let index: usize = rest.split(']').next()?.parse().ok()?;
            return self.resource_pointers.get(index).cloned();
        }
        self.field_pointers
            .iter()
            .filter(|(f, _)| field.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .map(|(_, p)| p.clone())
    }
}

/// [`import`] of a document's text (YAML or JSON), `name` naming it in errors.
pub fn import_text(
    name: &str,
    text: &str,
    options: &ImportOptions,
) -> Result<ImportedApi, ImportError> {
    let root = document::parse(name, text).map_err(|p| ImportError {
        document: name.to_string(),
        problems: vec![p],
    })?;
    import(name, &root, options)
}

/// The API definition `root` (an OpenAPI 3.0 or 3.1 document) describes, or every
/// problem that keeps it from being imported (see the module docs).
pub fn import(
    name: &str,
    root: &Value,
    options: &ImportOptions,
) -> Result<ImportedApi, ImportError> {
    let mut importer = Importer {
        root,
        problems: Vec::new(),
        schemes: BTreeMap::new(),
    };
    let imported = importer.run(options);
    if importer.problems.is_empty() {
        Ok(imported)
    } else {
        Err(ImportError {
            document: name.to_string(),
            problems: importer.problems,
        })
    }
}

/// The kinds of security scheme, as far as Gatehouse is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// OAuth2, OpenID Connect or an HTTP bearer token: a Gatehouse token does.
    Token,
    /// Anything else (API keys, HTTP basic, mutual TLS): Gatehouse cannot check it.
    Other,
}

/// The authentication one operation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authentication {
    disabled: bool,
    scopes: Vec<String>,
}

struct Importer<'v> {
    root: &'v Value,
    problems: Vec<Problem>,
    schemes: BTreeMap<String, Scheme>,
}

impl<'v> Importer<'v> {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(pointer, message));
    }

    fn run(&mut self, options: &ImportOptions) -> ImportedApi {
        let root = self.root;
        let mut imported = ImportedApi {
            definition: ApiDefinition::default(),
            resource_pointers: Vec::new(),
            field_pointers: BTreeMap::new(),
        };
        if !root.is_object() {
            self.problem("", "an OpenAPI document is a JSON or YAML object");
            return imported;
        }
        if root.get("swagger").is_some() {
            self.problem(
                "/swagger",
                "Swagger 2.0 is not supported: convert the document to OpenAPI 3 first",
            );
            return imported;
        }
        match root.get("openapi").and_then(Value::as_str) {
            Some(v)
                if v.starts_with("3.0.") || v.starts_with("3.1.") || v == "3.0" || v == "3.1" => {}
            Some(v) => self.problem(
                "/openapi",
                format!("OpenAPI {v} is not supported: 3.0.x and 3.1.x are"),
            ),
            None => self.problem(
                "/openapi",
                "missing: an OpenAPI 3.0 or 3.1 document says which",
            ),
        }
        document::check_references(root, "the document", &mut self.problems);
        self.read_info(options, &mut imported);
        self.read_schemes();
        let default_security = root.get("security").map(|s| ("/security".to_string(), s));
        let endpoints = self.read_endpoints(options, &mut imported);
        imported.definition.endpoints = endpoints;
        imported.definition.subscription_tiers = options.subscription_tiers.clone();

        for key in ["webhooks"] {
            if let Some(Value::Object(hooks)) = root.get(key) {
                for hook in hooks.keys() {
                    self.problem(
                        child(&child("", key), hook),
                        "webhooks are calls the API makes, not calls a gateway routes: remove them to import the rest",
                    );
                }
            }
        }
        match root.get("paths") {
            Some(Value::Object(paths)) => {
                for (path, item) in paths {
                    self.read_path(path, item, default_security.as_ref(), &mut imported);
                }
            }
            Some(_) => self.problem("/paths", "must be an object of path templates"),
            None => {}
        }
        if imported.definition.resources.is_empty() && self.problems.is_empty() {
            self.problem(
                "/paths",
                "the document has no operation for a gateway to route",
            );
        }
        if let Some(why) = options.too_many_resources(imported.definition.resources.len()) {
            self.problem("/paths", why);
        }
        imported
    }

    /// `info.<key>`, trimmed and checked with the domain's rule for it (`check`); a
    /// problem at `/info/<key>` when it breaks the rule, or when it is missing (`needed`
    /// says why it may not be).
    fn info_text(
        &mut self,
        info: Option<&Value>,
        key: &str,
        needed: &str,
        check: fn(&str, &str) -> Result<(), gatehouse_domain::DomainError>,
    ) -> String {
        let pointer = format!("/info/{key}");
        let Some(text) = info.and_then(|i| i.get(key)).and_then(Value::as_str) else {
            self.problem(pointer, format!("missing: {needed}"));
            return String::new();
        };
        let text = text.trim().to_string();
        if let Err(e) = check(&format!("info.{key}"), &text) {
            self.problem(pointer, rule_of(e));
        }
        text
    }

    fn read_info(&mut self, options: &ImportOptions, imported: &mut ImportedApi) {
        let root = self.root;
        let info = root.get("info");
        let d = &mut imported.definition;
        d.name = self.info_text(info, "title", "it names the API", validate::name);
        imported
            .field_pointers
            .insert("definition.name".into(), "/info/title".into());
        d.version = self.info_text(
            info,
            "version",
            "it is the API's version",
            validate::version,
        );
        imported
            .field_pointers
            .insert("definition.version".into(), "/info/version".into());
        let description = info
            .and_then(|i| i.get("description"))
            .and_then(Value::as_str);
        d.description = truncate(description.unwrap_or(""), 10_000);

        let (context, at) = match &options.context {
            Some(context) => (Some(context.clone()), "--context".to_string()),
            None => {
                let at_root = root
                    .get("x-gatehouse-context")
                    .map(|v| ("/x-gatehouse-context", v));
                let in_info = info
                    .and_then(|i| i.get("x-gatehouse-context"))
                    .map(|v| ("/info/x-gatehouse-context", v));
                match at_root.or(in_info) {
                    Some((at, Value::String(c))) => (Some(c.clone()), at.to_string()),
                    Some((at, _)) => {
                        self.problem(at, "must be a string such as /pets");
                        (None, at.to_string())
                    }
                    None => {
                        self.problem(
                            "/x-gatehouse-context",
                            "no context: give one (--context /pets) or set x-gatehouse-context in the document",
                        );
                        (None, String::new())
                    }
                }
            }
        };
        if let Some(context) = context {
            if let Err(e) = validate::context("context", &context) {
                self.problem(at.clone(), rule_of(e));
            }
            d.context = context;
        }
        imported
            .field_pointers
            .insert("definition.context".into(), at);
    }

    fn read_schemes(&mut self) {
        let Some(Value::Object(schemes)) = self
            .root
            .get("components")
            .and_then(|c| c.get("securitySchemes"))
        else {
            return;
        };
        for (name, scheme) in schemes {
            let at = child("/components/securitySchemes", name);
            let scheme = match document::follow(self.root, at, scheme) {
                Ok((_, s)) => s,
                Err(_) => continue, // reported by the reference check
            };
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
            let http_scheme = scheme
                .get("scheme")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            let token = matches!(kind, "oauth2" | "openIdConnect")
                || (kind == "http" && http_scheme == "bearer");
            self.schemes.insert(
                name.clone(),
                if token { Scheme::Token } else { Scheme::Other },
            );
        }
    }

    fn read_endpoints(
        &mut self,
        options: &ImportOptions,
        imported: &mut ImportedApi,
    ) -> Option<Endpoints> {
        let root = self.root;
        let group = |urls: Vec<String>| {
            (!urls.is_empty()).then(|| EndpointGroup {
                urls,
                ..Default::default()
            })
        };
        let mut production = options.production_urls.clone();
        if production.is_empty() {
            if let Some(urls) = self.wso2_endpoints("x-wso2-production-endpoints") {
                production = urls;
                imported.field_pointers.insert(
                    "definition.endpoints.production".into(),
                    "/x-wso2-production-endpoints".into(),
                );
            } else if let Some(url) = self.first_server() {
                production = vec![url];
                imported.field_pointers.insert(
                    "definition.endpoints.production".into(),
                    "/servers/0/url".into(),
                );
            }
        }
        let mut sandbox = options.sandbox_urls.clone();
        if sandbox.is_empty()
            && let Some(urls) = self.wso2_endpoints("x-wso2-sandbox-endpoints")
        {
            sandbox = urls;
            imported.field_pointers.insert(
                "definition.endpoints.sandbox".into(),
                "/x-wso2-sandbox-endpoints".into(),
            );
        }
        for (urls, at) in [
            (&production, "definition.endpoints.production"),
            (&sandbox, "definition.endpoints.sandbox"),
        ] {
            for url in urls {
                if let Err(e) = validate::endpoint_url("endpoint", url) {
                    let pointer = imported
                        .field_pointers
                        .get(at)
                        .cloned()
                        .unwrap_or_else(|| "--production-url/--sandbox-url".into());
                    self.problem(pointer, rule_of(e));
                }
            }
        }
        let _ = root;
        let endpoints = Endpoints {
            production: group(production),
            sandbox: group(sandbox),
            timeout_ms: 0,
        };
        (endpoints != Endpoints::default()).then_some(endpoints)
    }

    /// WSO2's `x-wso2-production-endpoints: {urls: [...]}`.
    fn wso2_endpoints(&mut self, key: &str) -> Option<Vec<String>> {
        let value = self.root.get(key)?;
        let urls = value.get("urls").and_then(Value::as_array);
        match urls {
            Some(urls) => Some(
                urls.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            None => {
                self.problem(child("", key), "expected {urls: [...]}");
                None
            }
        }
    }

    /// The first server's URL with its variables at their defaults; a problem for a
    /// relative URL (no host to send calls to).
    fn first_server(&mut self) -> Option<String> {
        let server = self.root.get("servers")?.as_array()?.first()?;
        let mut url = server.get("url")?.as_str()?.to_string();
        if let Some(Value::Object(variables)) = server.get("variables") {
            for (name, variable) in variables {
                match variable.get("default").and_then(Value::as_str) {
                    Some(default) => url = url.replace(&format!("{{{name}}}"), default),
                    None => self.problem(
                        format!("/servers/0/variables/{}", document::escape(name)),
                        "a server variable needs a default",
                    ),
                }
            }
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(
                "/servers/0/url",
                format!(
                    "{url:?} is not an absolute http(s) URL, so it names no backend: give the production endpoint (--production-url)"
                ),
            );
            return None;
        }
        Some(url.trim_end_matches('/').to_string())
    }

    fn read_path(
        &mut self,
        path: &str,
        item: &'v Value,
        default_security: Option<&(String, &'v Value)>,
        imported: &mut ImportedApi,
    ) {
        let at = child("/paths", path);
        if let Err(e) = validate::path_template("path", path) {
            self.problem(
                at.clone(),
                format!("Gatehouse cannot route this path template: {}", rule_of(e)),
            );
            return;
        }
        let (item_at, item) = match document::follow(self.root, at.clone(), item) {
            Ok(found) => found,
            Err(_) => return, // reported by the reference check
        };
        let Some(item) = item.as_object() else {
            self.problem(item_at, "a path item is an object of operations");
            return;
        };
        if item.contains_key("servers") {
            self.problem(
                child(&item_at, "servers"),
                "servers of one path cannot be represented: an API has one set of backends",
            );
        }
        if item.contains_key("trace") {
            self.problem(
                child(&item_at, "trace"),
                "TRACE is not a method Gatehouse routes",
            );
        }
        for (key, method) in OPERATIONS {
            let Some(operation) = item.get(*key) else {
                continue;
            };
            let op_at = child(&item_at, key);
            if operation.get("servers").is_some() {
                self.problem(
                    child(&op_at, "servers"),
                    "servers of one operation cannot be represented: an API has one set of backends",
                );
            }
            if let Some(Value::Object(callbacks)) = operation.get("callbacks") {
                for name in callbacks.keys() {
                    self.problem(
                        child(&child(&op_at, "callbacks"), name),
                        "callbacks are calls the API makes, not calls a gateway routes: remove them to import the rest",
                    );
                }
            }
            let security = match operation.get("security") {
                Some(s) => Some((child(&op_at, "security"), s)),
                None => default_security.map(|(p, s)| (p.clone(), *s)),
            };
            let mut auth = match security {
                Some((pointer, requirements)) => self.authentication(&pointer, requirements),
                None => Authentication {
                    disabled: false,
                    scopes: Vec::new(),
                },
            };
            if operation.get("x-auth-type").and_then(Value::as_str) == Some("None") {
                auth.disabled = true;
            }
            if let Some(scope) = operation.get("x-scope").and_then(Value::as_str)
                && !auth.scopes.iter().any(|s| s == scope)
            {
                auth.scopes.push(scope.to_string());
            }
            for scope in &auth.scopes {
                if let Err(e) = validate::scope("scope", scope) {
                    self.problem(op_at.clone(), rule_of(e));
                }
            }
            let throttling_tier = operation
                .get("x-throttling-tier")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            imported.definition.resources.push(Resource {
                method: (*method).to_string(),
                path: path.to_string(),
                auth_disabled: auth.disabled,
                scopes: if auth.disabled {
                    Vec::new()
                } else {
                    auth.scopes
                },
                throttling_tier,
            });
            imported.resource_pointers.push(op_at);
        }
    }

    /// What a `security` array asks for (see the module docs).
    fn authentication(&mut self, at: &str, requirements: &Value) -> Authentication {
        let open = Authentication {
            disabled: true,
            scopes: Vec::new(),
        };
        let Some(requirements) = requirements.as_array() else {
            self.problem(at, "security is an array of requirement objects");
            return open;
        };
        if requirements.is_empty() {
            return open;
        }
        let anonymous = requirements
            .iter()
            .filter(|r| r.as_object().is_some_and(Map::is_empty))
            .count();
        if anonymous == requirements.len() {
            return open;
        }
        if anonymous > 0 {
            self.problem(
                at,
                "optional authentication ({} beside other requirements) cannot be represented: a resource is open or needs a token",
            );
            return open;
        }
        let mut scopes: BTreeSet<String> = BTreeSet::new();
        let mut any_token = false;
        for (i, requirement) in requirements.iter().enumerate() {
            let req_at = format!("{at}/{i}");
            let Some(requirement) = requirement.as_object() else {
                self.problem(req_at, "a security requirement is an object");
                continue;
            };
            if requirement.len() > 1 {
                self.problem(
                    req_at,
                    "several schemes required at once cannot be represented: Gatehouse checks one bearer token",
                );
                continue;
            }
            for (name, needed) in requirement {
                let scheme_at = child(&req_at, name);
                match self.schemes.get(name) {
                    Some(Scheme::Token) => {}
                    Some(Scheme::Other) => {
                        self.problem(
                            scheme_at,
                            format!(
                                "scheme {name} is not an OAuth2 bearer token (API key, HTTP basic or mutual TLS): the gateway checks Gatehouse tokens only"
                            ),
                        );
                        continue;
                    }
                    None => {
                        self.problem(
                            scheme_at,
                            format!("scheme {name} is not defined in /components/securitySchemes"),
                        );
                        continue;
                    }
                }
                let needed: Vec<&str> = needed
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match needed.as_slice() {
                    [] => any_token = true,
                    [one] => {
                        scopes.insert((*one).to_string());
                    }
                    _ => self.problem(
                        scheme_at,
                        "a requirement needing several scopes at once cannot be represented: a resource accepts any one of its scopes (list them as separate requirements)",
                    ),
                }
            }
        }
        Authentication {
            disabled: false,
            // Any token at all is one of the alternatives: no scope is needed.
            scopes: if any_token {
                Vec::new()
            } else {
                scopes.into_iter().collect()
            },
        }
    }
}

/// The rule of a domain validation error (its field is the importer's to name).
fn rule_of(error: gatehouse_domain::DomainError) -> String {
    match error {
        gatehouse_domain::DomainError::InvalidArgument { rule, .. } => rule,
        other => other.to_string(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Where the gateway and token-service are, as application developers reach them.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A gateway's public base URL, e.g. `https://localhost:8243`.
    pub gateway_url: String,
    /// token-service's token endpoint, e.g. `https://localhost:9443/oauth2/token`.
    pub token_url: String,
}

/// The name of the security scheme exports declare.
pub const SECURITY_SCHEME: &str = "gatehouse";

/// The OpenAPI 3.0 document of the gateway's view of `definition` (see the module docs).
pub fn export(definition: &ApiDefinition, options: &ExportOptions) -> Value {
    let base = format!(
        "{}{}/{}",
        options.gateway_url.trim_end_matches('/'),
        definition.context,
        definition.version
    );
    let mut all_scopes: BTreeSet<&str> = BTreeSet::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for resource in &definition.resources {
        let parameters: Vec<Value> = resource
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let security = if resource.auth_disabled {
            json!([])
        } else if resource.scopes.is_empty() {
            json!([{ SECURITY_SCHEME: [] }])
        } else {
            Value::Array(
                resource
                    .scopes
                    .iter()
                    .map(|s| json!({ SECURITY_SCHEME: [s] }))
                    .collect(),
            )
        };
        all_scopes.extend(resource.scopes.iter().map(String::as_str));
        let mut operation = Map::new();
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        operation.insert("security".into(), security);
        if !resource.throttling_tier.is_empty() {
            operation.insert(
                "x-throttling-tier".into(),
                Value::String(resource.throttling_tier.clone()),
            );
        }
        if resource.path.ends_with("/*") {
            operation.insert(
                "description".into(),
                json!("Matches every path below this one (Gatehouse's trailing /*)."),
            );
        }
        operation.insert(
            "responses".into(),
            json!({
                "default": {"description": "The backend's answer"},
                "401": {"description": "Missing or invalid token (WSO2 codes 900901, 900902)"},
                "403": {"description": "Not subscribed, or a scope is missing (900908, 900910)"},
                "429": {"description": "Throttled (900800-900804); see Retry-After"}
            }),
        );
        paths.entry(resource.path.as_str()).or_default().insert(
            resource.method.to_ascii_lowercase(),
            Value::Object(operation),
        );
    }
    let scopes: Map<String, Value> = all_scopes
        .into_iter()
        .map(|s| {
            (
                s.to_string(),
                json!(format!("Granted per subscription by an admin")),
            )
        })
        .collect();
    let mut info = json!({"title": definition.name, "version": definition.version});
    if !definition.description.is_empty() {
        info["description"] = json!(definition.description);
    }
    json!({
        "openapi": "3.0.3",
        "info": info,
        "x-gatehouse-context": definition.context,
        "servers": [{"url": base, "description": "Gatehouse gateway"}],
        "security": [{ SECURITY_SCHEME: [] }],
        "paths": paths.into_iter().map(|(p, ops)| (p.to_string(), Value::Object(ops))).collect::<Map<String, Value>>(),
        "components": {"securitySchemes": {SECURITY_SCHEME: {
            "type": "oauth2",
            "description": "A Gatehouse access token: client credentials of a subscribed application",
            "flows": {"clientCredentials": {"tokenUrl": options.token_url, "scopes": scopes}}
        }}}
    })
}
