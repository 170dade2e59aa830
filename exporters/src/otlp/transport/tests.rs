use super::*;

#[test]
fn http_status_classification_follows_the_spec() {
    for code in [429u16, 502, 503, 504] {
        let r = classify_http(
            StatusCode::from_u16(code).unwrap(),
            Some(Duration::from_secs(2)),
            b"",
        );
        assert!(
            matches!(
                r,
                Err(SendError::Retryable {
                    retry_after: Some(_),
                    ..
                })
            ),
            "{code}"
        );
    }
    for code in [400u16, 401, 403, 404, 413, 500] {
        let r = classify_http(StatusCode::from_u16(code).unwrap(), None, b"nope");
        assert!(matches!(r, Err(SendError::Permanent { .. })), "{code}");
    }
    assert_eq!(
        classify_http(StatusCode::OK, None, b""),
        Ok(SendOk::Accepted)
    );
}

#[test]
fn partial_success_is_reported_not_retried() {
    let resp = ExportMetricsServiceResponse {
        partial_success: Some(
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "bad points".into(),
            },
        ),
    };
    let r = classify_http(StatusCode::OK, None, &resp.encode_to_vec());
    assert_eq!(
        r,
        Ok(SendOk::PartialSuccess {
            rejected: 3,
            message: "bad points".into()
        })
    );
}

#[test]
fn grpc_codes_and_retry_info() {
    let s = tonic::Status::unavailable("down");
    assert!(matches!(
        classify_grpc(&s),
        SendError::Retryable {
            retry_after: None,
            ..
        }
    ));
    let s = tonic::Status::invalid_argument("bad");
    assert!(matches!(classify_grpc(&s), SendError::Permanent { .. }));
    // RESOURCE_EXHAUSTED is retryable only with RetryInfo.
    let s = tonic::Status::resource_exhausted("slow down");
    assert!(matches!(classify_grpc(&s), SendError::Permanent { .. }));
    let details = encode_retry_info_status(8, "slow down", Duration::from_millis(2500));
    let s =
        tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details.into());
    assert_eq!(
        classify_grpc(&s),
        SendError::Retryable {
            reason: "gRPC export failed: ResourceExhausted: slow down".into(),
            retry_after: Some(Duration::from_millis(2500))
        }
    );
}

#[test]
fn grpc_transport_failure_is_retryable_and_keeps_its_cause() {
    /// Like tonic's transport error: a fixed text, the cause as source.
    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct TransportError(#[source] std::io::Error);
    let cause = std::io::Error::other("received fatal alert: CertificateRequired");
    let s = tonic::Status::from_error(Box::new(TransportError(cause)));
    assert_eq!(s.code(), tonic::Code::Unknown);
    assert_eq!(
        classify_grpc(&s),
        SendError::Retryable {
            reason: "gRPC export failed: Unknown: transport error: \
                         received fatal alert: CertificateRequired"
                .into(),
            retry_after: None
        }
    );
    // UNKNOWN sent by the server (no source) stays permanent.
    let s = tonic::Status::unknown("backend bug");
    assert!(matches!(classify_grpc(&s), SendError::Permanent { .. }));
}

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn bad_settings_are_named() {
    let s = TransportSettings {
        url: "ftp://x".into(),
        protocol: Protocol::HttpProtobuf,
        headers: vec![],
        compression: Compression::None,
        timeout: Duration::from_secs(1),
        tls: TlsMaterial::default(),
    };
    let e = Transport::new(s.clone()).unwrap_err().to_string();
    assert!(e.contains("ftp://x"), "{e}");
    let mut s2 = s;
    s2.url = "http://127.0.0.1:1/v1/metrics".into();
    s2.headers = vec![("bad header".into(), "v".into())];
    let e = Transport::new(s2).unwrap_err().to_string();
    assert!(e.contains("bad header"), "{e}");
}
