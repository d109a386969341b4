//! A blocking HTTP client for one peer replica (ureq): digests, series digests, samples and
//! merged-read selections. Called from the anti-entropy threads and from query evaluation
//! on the blocking pool, never from a runtime thread.
//!
//! Must not: decide anything; it only asks and decodes, every failure a [`PeerError`]
//! naming the peer and the request.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    digest::SeriesDigest,
    wire::{self, DigestResponse, SamplesRequest, SelectRequest, SeriesDigestResponse, WireError},
};
use crate::store::{Matcher, SeriesSamples};

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Not reachable, timed out, or the connection broke.
    #[error("peer {url}: {what}: {source}")]
    Http {
        /// The request URL.
        url: String,
        /// Which request.
        what: &'static str,
        /// The transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The peer answered with an error status.
    #[error("peer {url}: {what}: HTTP {status}: {body}")]
    Status {
        /// The request URL.
        url: String,
        /// Which request.
        what: &'static str,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer could not be decoded.
    #[error("peer {url}: {what}: {problem}")]
    Decode {
        /// The request URL.
        url: String,
        /// Which request.
        what: &'static str,
        /// What was wrong.
        problem: String,
    },
}

/// One peer.
#[derive(Debug, Clone)]
pub struct Peer {
    url: String,
    agent: ureq::Agent,
}

const MAX_BODY: u64 = wire::MAX_PAYLOAD_BYTES;

impl Peer {
    /// A client for the peer at `url` (its HTTP API base URL) with a per-request `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn finish(
        &self,
        url: &str,
        what: &'static str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, PeerError> {
        let http_err = |source| PeerError::Http {
            url: url.to_owned(),
            what,
            source: Box::new(source),
        };
        let mut response = result.map_err(http_err)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(http_err)?;
        if status != 200 {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(500);
            return Err(PeerError::Status {
                url: url.to_owned(),
                what,
                status,
                body: text,
            });
        }
        Ok(body)
    }

    fn json<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
        body: &[u8],
    ) -> Result<T, PeerError> {
        serde_json::from_slice(body).map_err(|e| PeerError::Decode {
            url: url.to_owned(),
            what,
            problem: e.to_string(),
        })
    }

    fn samples_from(
        &self,
        url: &str,
        what: &'static str,
        body: &[u8],
    ) -> Result<Vec<SeriesSamples>, PeerError> {
        wire::decode_samples(body).map_err(|e: WireError| PeerError::Decode {
            url: url.to_owned(),
            what,
            problem: e.to_string(),
        })
    }

    /// Window digests of `[start, end)` cut every `window` ms.
    pub fn digest(&self, start: i64, end: i64, window: i64) -> Result<DigestResponse, PeerError> {
        let what = "digest";
        let url = format!(
            "{}/api/v1/replication/digest?start={start}&end={end}&window={window}",
            self.url
        );
        let body = self.finish(&url, what, self.agent.get(&url).call())?;
        self.json(&url, what, &body)
    }

    /// Per-series digests of `[start, end)`.
    pub fn series_digest(&self, start: i64, end: i64) -> Result<Vec<SeriesDigest>, PeerError> {
        let what = "series digest";
        let url = format!(
            "{}/api/v1/replication/series_digest?start={start}&end={end}",
            self.url
        );
        let body = self.finish(&url, what, self.agent.get(&url).call())?;
        Ok(self.json::<SeriesDigestResponse>(&url, what, &body)?.series)
    }

    /// Samples in `[start, end)` of the series with these hashes.
    pub fn samples(
        &self,
        start: i64,
        end: i64,
        series: Vec<u64>,
    ) -> Result<Vec<SeriesSamples>, PeerError> {
        let what = "samples";
        let url = format!("{}/api/v1/replication/samples", self.url);
        let request = serde_json::to_vec(&SamplesRequest { start, end, series })
            .expect("serializing plain data cannot fail");
        let body = self.finish(
            &url,
            what,
            self.agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&request[..]),
        )?;
        self.samples_from(&url, what, &body)
    }

    /// Raw samples of the series matching `matchers` in `[mint, maxt]` (merged reads).
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, PeerError> {
        let what = "select";
        let url = format!("{}/api/v1/replication/select", self.url);
        let request = serde_json::to_vec(&SelectRequest {
            matchers: wire::matchers_to_wire(matchers),
            mint,
            maxt,
        })
        .expect("serializing plain data cannot fail");
        let body = self.finish(
            &url,
            what,
            self.agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&request[..]),
        )?;
        self.samples_from(&url, what, &body)
    }
}
