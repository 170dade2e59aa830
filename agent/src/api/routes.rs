//! The API's routes: authentication and roles per request, the audit of every request that
//! changes something, and the mapping of each route to the fault engine or the drill
//! service, with failures answered through [`crate::outcome::Outcome`].

use super::*;

/// A response with `body` of type `content_type`.
pub(super) fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

pub(super) fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    typed(status, "application/json", body)
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({"error": msg.into()}))
}

/// The request's audit: a tracing line and, with OTLP on, a log record.
pub(super) fn audit(
    state: &State,
    who: &str,
    req: (&Method, &str),
    status: StatusCode,
    detail: &str,
) {
    if let Some(logs) = state.svc.logs() {
        logs.emit(&crate::telemetry::events::api_request(
            who,
            req.0.as_str(),
            req.1,
            status.as_u16(),
            detail,
        ));
    }
    tracing::info!(
        target: "faultline::audit",
        token = who,
        method = %req.0,
        path = req.1,
        status = status.as_u16(),
        detail,
        "API request"
    );
}

/// Routes one request.
pub(super) async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let dry_run = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "dry_run=true" || kv == "dry_run=1")
    });
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let req_query = req.uri().query().map(str::to_owned);
    match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        (&Method::GET, ["readyz"]) => {
            return json(StatusCode::OK, &serde_json::json!({"status": "ready"}));
        }
        _ => {}
    }
    let known_route = matches!(
        (&method, segs.as_slice()),
        (&Method::GET, ["v1", "info"])
            | (&Method::GET | &Method::POST, ["v1", "drills"])
            | (&Method::GET, ["v1", "drills", _])
            | (
                &Method::GET,
                ["v1", "drills", _, "junit" | "html" | "progress"]
            )
            | (&Method::POST, ["v1", "drills", _, "abort"])
            | (&Method::POST, ["v1", "abort"])
            | (&Method::GET | &Method::POST, ["v1", "faults"])
            | (&Method::DELETE, ["v1", "faults", _])
            | (&Method::GET, ["v1", "status"])
            | (&Method::GET, ["v1", "history"])
    );
    if !known_route {
        return error(StatusCode::NOT_FOUND, format!("no route {method} {path}"));
    }
    let mutating = method != Method::GET;
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(who) = state.tokens.current().from_header(auth_header) else {
        if mutating {
            audit(
                state,
                "-",
                (&method, &path),
                StatusCode::UNAUTHORIZED,
                "no valid bearer token",
            );
        }
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"faultline\""),
        );
        return r;
    };
    if mutating && who.role < Role::Operator {
        audit(
            state,
            &who.name,
            (&method, &path),
            StatusCode::FORBIDDEN,
            "viewer token",
        );
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} is a viewer; this needs an operator token",
                who.name
            ),
        );
    }
    let body = if mutating {
        let read = tokio::time::timeout(
            state.read_timeout,
            Limited::new(req.into_body(), state.max_body).collect(),
        )
        .await;
        match read {
            Ok(Ok(b)) => b.to_bytes(),
            Err(_) => {
                let msg = format!(
                    "the body did not arrive within {} (api.read_timeout)",
                    humantime::format_duration(state.read_timeout)
                );
                audit(
                    state,
                    &who.name,
                    (&method, &path),
                    StatusCode::REQUEST_TIMEOUT,
                    &msg,
                );
                return error(StatusCode::REQUEST_TIMEOUT, msg);
            }
            Ok(Err(e)) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, msg) = if too_big {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the body is larger than {} bytes (api.max_body_bytes)",
                            state.max_body
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {e}"),
                    )
                };
                audit(state, &who.name, (&method, &path), status, &msg);
                return error(status, msg);
            }
        }
    } else {
        Bytes::new()
    };
    if let (&Method::GET, ["v1", "history"]) = (&method, segs.as_slice()) {
        return history(state, req_query.as_deref()).await;
    }
    let resp = route(state, &who, (&method, &segs, dry_run), &body).await;
    if mutating {
        audit(state, &who.name, (&method, &path), resp.status(), "");
    }
    resp
}

/// Items a history page holds unless `limit` says otherwise.
const HISTORY_PAGE: usize = 500;

/// The query of `GET /v1/history`: (since, after, limit), or the 400 message.
pub(super) fn history_query(
    query: Option<&str>,
    now: f64,
) -> Result<(f64, Option<String>, usize), String> {
    let (mut since, mut after, mut limit) = (0.0, None, HISTORY_PAGE);
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = crate::posture::fleet::percent_decode(v);
        match k {
            "since" => {
                since = match v.parse::<f64>() {
                    Ok(t) if t.is_finite() => t,
                    _ => match v.parse::<HumanDuration>() {
                        Ok(d) => now - d.0.as_secs_f64(),
                        Err(_) => {
                            return Err(format!(
                                "since={v:?}: give Unix seconds or a duration such as 90d"
                            ));
                        }
                    },
                }
            }
            "after" => after = Some(v),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=crate::posture::history::MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        format!(
                            "limit={v:?}: give 1 to {}",
                            crate::posture::history::MAX_PAGE
                        )
                    })?;
            }
            other => return Err(format!("unknown parameter {other:?}: since, after, limit")),
        }
    }
    Ok((since, after, limit))
}

/// `GET /v1/history`: one page of the node's evidence, read on the blocking pool.
pub(super) async fn history(state: &State, query: Option<&str>) -> Response<Full<Bytes>> {
    let (since, after, limit) = match history_query(query, crate::backup::now_unix()) {
        Ok(q) => q,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let svc = &state.svc;
    let catalog = crate::posture::history::Catalog::new(svc.loaded(), svc.backups());
    let dir = svc.state_dir().to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        crate::posture::history::read_page(&dir, &catalog, since, after.as_deref(), limit)
    })
    .await;
    match read {
        Ok(Ok(page)) => json(StatusCode::OK, &page),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("history read did not finish: {e}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartBody {
    #[serde(default)]
    scenario: Option<String>,
    #[serde(default)]
    inline: Option<serde_json::Value>,
}

pub(super) async fn route(
    state: &State,
    who: &Identity,
    (method, segs, dry_run): (&Method, &[&str], bool),
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let svc = &state.svc;
    let engine = &state.engine;
    let requester = Requester::Api {
        token: who.name.clone(),
    };
    match (method, segs) {
        (&Method::GET, ["v1", "info"]) => json(StatusCode::OK, &state.info),
        (&Method::GET, ["v1", "status"]) => json(StatusCode::OK, &state.status.gather().await),
        (&Method::GET, ["v1", "drills"]) => json(StatusCode::OK, &svc.list().await),
        (&Method::GET, ["v1", "drills", id]) => match svc.get(id).await {
            Some(r) => json(StatusCode::OK, &r),
            None => error(StatusCode::NOT_FOUND, format!("no drill {id}")),
        },
        (&Method::GET, ["v1", "drills", id, "progress"]) => match svc.progress(id).await {
            Some(p) => json(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, format!("no drill {id}")),
        },
        (&Method::GET, ["v1", "drills", id, format @ ("junit" | "html")]) => {
            match svc.get(id).await {
                Some(r) if *format == "junit" => typed(
                    StatusCode::OK,
                    "application/xml; charset=utf-8",
                    report::junit::render(&r).into_bytes(),
                ),
                Some(r) => typed(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    report::html::render(&r).into_bytes(),
                ),
                None => error(StatusCode::NOT_FOUND, format!("no drill {id}")),
            }
        }
        (&Method::POST, ["v1", "drills"]) => {
            let sc = match start_scenario(svc, body) {
                Ok(s) => s,
                Err(r) => return r,
            };
            match svc.start(sc, requester).await {
                Ok(id) => json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"id": id, "href": format!("/v1/drills/{id}")}),
                ),
                Err(e) => error(e.outcome().status(), e.to_string()),
            }
        }
        (&Method::POST, ["v1", "drills", id, "abort"]) => {
            if svc.abort(id, &requester.to_string()) {
                json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"id": id, "aborting": true}),
                )
            } else {
                error(StatusCode::NOT_FOUND, format!("no running drill {id}"))
            }
        }
        (&Method::POST, ["v1", "abort"]) => {
            let (drills, reverted, errors) = svc.abort_all(&requester).await;
            let status = if errors.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            json(
                status,
                &serde_json::json!({"drills_aborted": drills, "faults_reverted": reverted, "errors": errors}),
            )
        }
        // Each active fault checked on the system now (audited as `check` by the caller).
        (&Method::GET, ["v1", "faults"]) => {
            json(StatusCode::OK, &engine.check_all(requester).await)
        }
        (&Method::POST, ["v1", "faults"]) => {
            let spec: FaultSpec = match serde_json::from_slice(body) {
                Ok(s) => s,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("not a fault spec: {e}"));
                }
            };
            if dry_run {
                return match engine.plan(spec, requester).await {
                    Ok(p) => json(StatusCode::OK, &p),
                    Err(e) => error(Outcome::of_fault_error(&e).status(), e.to_string()),
                };
            }
            match engine.inject(spec, requester).await {
                Ok(f) => json(StatusCode::CREATED, &f),
                Err(e) => error(Outcome::of_fault_error(&e).status(), e.to_string()),
            }
        }
        (&Method::DELETE, ["v1", "faults", id]) => {
            let fid: FaultId = match id.parse() {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match engine.abort(&fid, requester).await {
                Ok(()) => json(
                    StatusCode::OK,
                    &serde_json::json!({"id": id, "reverted": true}),
                ),
                Err(FaultError::UnknownId(_)) => {
                    error(StatusCode::NOT_FOUND, format!("no active fault {id}"))
                }
                Err(e) => error(Outcome::of_revert_error(&e).status(), e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// The scenario a `POST /v1/drills` body names or carries.
// The error is the ready-made 400 response itself, built only for a bad request: boxing it
// would only add an allocation to the error path.
#[allow(clippy::result_large_err)]
pub(super) fn start_scenario(
    svc: &DrillService,
    body: &Bytes,
) -> Result<scenario::Scenario, Response<Full<Bytes>>> {
    parse_start_body(body, svc.known(), |name| svc.scenario(name))
        .map_err(|(status, msg)| error(status, msg))
}

/// Reads a `POST /v1/drills` body: `{"scenario": NAME}` (looked up with `configured`),
/// `{"inline": SCENARIO}` (an object or YAML text), or a YAML scenario. Pure (no I/O), so
/// it is fuzzed on its own; the error is the status and message the API answers with.
pub fn parse_start_body(
    body: &[u8],
    known: &scenario::Known,
    configured: impl Fn(&str) -> Option<scenario::Scenario>,
) -> Result<scenario::Scenario, (StatusCode, String)> {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(bad(
            "empty body: send {\"scenario\": NAME} or {\"inline\": SCENARIO} or a YAML scenario"
                .into(),
        ));
    }
    // JSON envelope first; anything else is an inline YAML scenario.
    let envelope: Option<StartBody> = if text.trim_start().starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.get("scenario").is_some() || v.get("inline").is_some() => {
                Some(serde_json::from_value(v).map_err(|e| bad(format!("bad request body: {e}")))?)
            }
            Ok(_) => None,
            Err(e) => return Err(bad(format!("bad JSON: {e}"))),
        }
    } else {
        None
    };
    let parse = |t: &str| {
        scenario::parse(t, "<request body>", known).map_err(|e| bad(format!("scenario error: {e}")))
    };
    match envelope {
        Some(StartBody {
            scenario: Some(name),
            inline: None,
        }) => configured(&name).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no scenario {name:?} in the agent config's drills:"),
            )
        }),
        Some(StartBody {
            scenario: None,
            inline: Some(v),
        }) => match v {
            serde_json::Value::String(yaml) => parse(&yaml),
            other => parse(&other.to_string()),
        },
        Some(_) => Err(bad("set exactly one of \"scenario\" and \"inline\"".into())),
        None => parse(text),
    }
}
