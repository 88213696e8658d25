//! HTTP classification: 5xx responses and errors are failures.

use http::{HeaderMap, Request, Response, StatusCode};

use super::{Class, Classify, ClassifyEos, ClassifyResponse, FailureReason};

/// Classifies plain HTTP: a 5xx status, an error instead of a response, or a body that fails
/// is a failure; anything else is a success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClassify;

/// [`HttpClassify`]'s per-request classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse;

/// [`HttpClassify`]'s end-of-stream classifier: the status is known; only a body error or an
/// early drop can still change the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpEos {
    status: StatusCode,
}

impl HttpEos {
    /// The end-of-stream classifier for a response with this status.
    pub fn new(status: StatusCode) -> Self {
        Self { status }
    }

    fn by_status(self) -> Option<Class> {
        self.status
            .is_server_error()
            .then_some(Class::Failure(FailureReason::Status(self.status)))
    }
}

impl Classify for HttpClassify {
    type Response = HttpResponse;

    fn classify_request<B>(&self, _: &Request<B>) -> HttpResponse {
        HttpResponse
    }
}

impl ClassifyResponse for HttpResponse {
    type Eos = HttpEos;

    fn classify_response<B>(self, rsp: &Response<B>) -> HttpEos {
        HttpEos::new(rsp.status())
    }
}

impl ClassifyEos for HttpEos {
    fn classify_eos(self, _: Option<&HeaderMap>) -> Class {
        self.by_status().unwrap_or(Class::Success)
    }

    fn classify_head(&self) -> Option<Class> {
        Some(self.by_status().unwrap_or(Class::Success))
    }

    fn classify_cancelled(self) -> Class {
        // A 5xx stays a 5xx whether or not its body was read.
        self.by_status()
            .unwrap_or(Class::Failure(FailureReason::Cancelled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eos(status: u16) -> HttpEos {
        let rsp = Response::builder().status(status).body(()).expect("valid");
        HttpResponse.classify_response(&rsp)
    }

    #[test]
    fn server_errors_fail_and_the_rest_succeed() {
        for ok in [200, 204, 301, 404, 429] {
            assert_eq!(eos(ok).classify_eos(None), Class::Success, "{ok}");
        }
        for bad in [500, 502, 503, 504] {
            let status = StatusCode::from_u16(bad).expect("valid");
            assert_eq!(
                eos(bad).classify_eos(None),
                Class::Failure(FailureReason::Status(status))
            );
            assert_eq!(
                eos(bad).classify_cancelled(),
                Class::Failure(FailureReason::Status(status))
            );
        }
        assert_eq!(
            eos(200).classify_cancelled(),
            Class::Failure(FailureReason::Cancelled)
        );
    }
}
