//! Shared setup for the integration tests: an in-process mock on a free port.

#![allow(dead_code)]

use mock_gemini::Config;
use serde_json::Value;

pub struct Mock {
    pub base: String,
    pub http: reqwest::Client,
}

/// Starts a mock with this config (JSON, same format as the config file).
pub async fn start(cfg: Value) -> Mock {
    let cfg = Config::from_json(&cfg.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(mock_gemini::serve(listener, cfg));
    Mock { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
}

impl Mock {
    /// POST `/v1beta/models/{model}:{method}` with the key; (status, JSON body).
    pub async fn call(&self, key: &str, model: &str, method: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1beta/models/{model}:{method}", self.base))
            .header("x-goog-api-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// streamGenerateContent with `alt=sse`: (status, events).
    pub async fn stream_sse(&self, key: &str, model: &str, body: &Value) -> (u16, Vec<Value>) {
        let r = self
            .http
            .post(format!("{}/v1beta/models/{model}:streamGenerateContent?alt=sse", self.base))
            .header("x-goog-api-key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, sse_events(&r.text().await.unwrap()))
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

/// The `data:` events of an SSE body.
pub fn sse_events(body: &str) -> Vec<Value> {
    body.split("\r\n\r\n")
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::from_str(s.strip_prefix("data: ").expect("data: prefix")).unwrap())
        .collect()
}

/// `candidates[0].content.parts` of a response.
pub fn parts_of(v: &Value) -> &Vec<Value> {
    v["candidates"][0]["content"]["parts"].as_array().expect("parts")
}
