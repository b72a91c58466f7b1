//! The route table: one exhaustive match that sends each route to a small handler. A route
//! behind auth gets its [`Ctx`] from [`Ctx::new`], which checks, in this order, the config, the
//! caller's token, its scopes and the kill switch, so no handler repeats any of them.

mod admin;
mod conversations;
mod embeddings;
mod files;
mod models;
mod observe;

use crate::fetch::{FetchTransport, FetchUpstream, WorkerRuntime};
use crate::respond::Answer;
use crate::state::State;
use llm_key_router_core::config::auth::{extract_token, Client};
use llm_key_router_core::config::{KeyPool, Settings};
use llm_key_router_core::engine::{Caller, Router};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::store::upstash::Upstash;
use llm_key_router_core::wire::api::{self, Route, Surface};
use serde_json::Value;
use worker::{Context, Request};

pub(crate) async fn dispatch(req: &mut Request, wctx: &Context, st: &State, route: &Route, started: u64) -> Answer {
    let cx = || Ctx::new(req, wctx, st, route, started);
    match route {
        Route::NotFound => Err(RouterError::NotFound { code: "not_found", message: "no such route".into() }),
        Route::MethodNotAllowed { allowed } => Err(RouterError::MethodNotAllowed { allowed }),
        Route::BadConversationId => {
            Err(RouterError::bad_request("invalid_conversation_id", "conversation id is malformed"))
        }
        Route::Dashboard => observe::dashboard(),
        Route::Health => observe::health(st, client(req, st).is_some()).await,
        Route::Stats => observe::stats(&cx()?).await,
        Route::Metrics => observe::metrics(&cx()?).await,
        Route::Models => observe::models(&cx()?, Surface::OpenAi).await,
        Route::GeminiModels => observe::models(&cx()?, Surface::Gemini).await,
        Route::GeminiModel(model) => observe::model(&cx()?, model, Surface::Gemini),
        Route::Model(model) => observe::model(&cx()?, model, Surface::OpenAi),
        Route::Embeddings => {
            let cx = cx()?;
            embeddings::openai(req, &cx).await
        }
        Route::GeminiEmbed { model, method } => {
            let cx = cx()?;
            embeddings::gemini(req, &cx, model, *method).await
        }
        Route::Generate => {
            let cx = cx()?;
            models::generate(req, &cx).await
        }
        Route::ChatCompletions => {
            let cx = cx()?;
            models::chat(req, &cx).await
        }
        Route::Gemini { model, method } => {
            let cx = cx()?;
            models::gemini(req, &cx, model, *method).await
        }
        Route::ConvSend(id) => {
            let cx = cx()?;
            models::conversation_send(req, &cx, id).await
        }
        Route::ConvCreate => {
            let cx = cx()?;
            conversations::create(req, &cx).await
        }
        Route::ConvGet(id) => conversations::get(&cx()?, id).await,
        Route::ConvDelete(id) => conversations::delete(&cx()?, id).await,
        Route::ConvMessages(id) => conversations::messages(req, &cx()?, id).await,
        Route::ConvList => conversations::list(req, &cx()?).await,
        Route::FileUpload => match files::upload_session_id(req) {
            // A resumable upload's data carries no credential: its session authorizes it.
            Some(session) => files::upload_data(req, st, &session).await,
            None => {
                let cx = cx()?;
                files::upload(req, &cx).await
            }
        },
        Route::Resource { kind, id, method } => {
            let cx = cx()?;
            files::resource(req, &cx, *kind, id.as_deref(), *method).await
        }
        Route::AdminKeys => admin::keys(&cx()?).await,
        Route::AdminChange { verb, target } => {
            let cx = cx()?;
            admin::change(req, &cx, *verb, target).await
        }
    }
}

/// The client whose token the request carries, if any.
fn client<'a>(req: &Request, st: &'a State) -> Option<&'a Client> {
    let h = req.headers();
    let auth = h.get("authorization").ok().flatten();
    let goog = h.get("x-goog-api-key").ok().flatten();
    let token = extract_token(auth.as_deref(), goog.as_deref())?;
    st.settings.as_ref().ok()?.clients.authenticate(token)
}

/// What every authenticated handler needs.
pub(crate) struct Ctx<'a> {
    pub(crate) wctx: &'a Context,
    pub(crate) st: &'a State,
    pub(crate) settings: &'a Settings,
    pub(crate) pool: &'a KeyPool,
    pub(crate) store: Upstash<FetchTransport>,
    pub(crate) caller: Caller,
    pub(crate) started: u64,
}

impl<'a> Ctx<'a> {
    fn new(
        req: &Request,
        wctx: &'a Context,
        st: &'a State,
        route: &Route,
        started: u64,
    ) -> Result<Ctx<'a>, RouterError> {
        let settings = st.settings.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
        let client = client(req, st).ok_or(RouterError::Unauthorized)?;
        if let Some(missing) = route.scopes().iter().find(|s| !client.has(**s)) {
            return Err(RouterError::Forbidden { scope: missing.as_str() });
        }
        if route.calls_upstream() && !settings.enabled {
            return Err(RouterError::RouterDisabled);
        }
        let pool = st.pool.as_ref().map_err(|e| RouterError::ConfigInvalid { errors: e.clone() })?;
        let store = Upstash::new(upstash(st, 5_000)?);
        let caller = Caller {
            client_id: client.id.clone(),
            rpm: client.rpm.unwrap_or(settings.user_rpm_default),
            burst: client.burst.unwrap_or(settings.user_burst_default),
            daily_tokens: client.daily_tokens,
            tpm: client.tpm,
            models: client.models.clone(),
        };
        Ok(Ctx { wctx, st, settings, pool, store, caller, started })
    }
}

impl<'a> Ctx<'a> {
    /// The engine over this request's adapters: the one place the glue assembles it.
    pub(crate) fn router<'r>(
        &'r self,
        upstream: &'r FetchUpstream,
    ) -> Router<'r, Upstash<FetchTransport>, FetchUpstream, WorkerRuntime> {
        Router {
            pool: self.pool,
            settings: self.settings,
            store: &self.store,
            upstream,
            rt: &WorkerRuntime,
            secrets: self.st,
            cfg_fingerprint: self.st.fingerprint.clone(),
        }
    }
}

/// The Upstash REST transport with this timeout.
pub(crate) fn upstash(st: &State, timeout_ms: u64) -> Result<FetchTransport, RouterError> {
    let (url, token) = st.upstash.clone().ok_or_else(|| RouterError::ConfigInvalid {
        errors: vec!["UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN must be set".into()],
    })?;
    Ok(FetchTransport { url, token, timeout_ms })
}

/// Reads and checks a JSON body: declared length, content type, size, UTF-8, syntax.
async fn read_json(req: &mut Request, settings: &Settings) -> Result<Value, RouterError> {
    let ct = req.headers().get("content-type").ok().flatten();
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok()) {
        if len > settings.max_body_bytes {
            return Err(RouterError::PayloadTooLarge { limit: settings.max_body_bytes });
        }
    }
    let bytes = req.bytes().await.map_err(|_| RouterError::bad_request("invalid_body", "could not read body"))?;
    api::parse_json_body(ct.as_deref(), &bytes, settings.max_body_bytes)
}

/// The query string, undecoded (the core decodes it).
fn query(req: &Request) -> String {
    api::url_query(&req.inner().url()).to_string()
}
