//! `/v1/conversations` reads, creation and deletion. Sends are model calls (`models`).

use super::{query, read_json, Ctx};
use crate::respond::{self, Answer};
use llm_key_router_core::conversations::{self, Conversations, CreateRequest};
use llm_key_router_core::error::RouterError;
use llm_key_router_core::ids;
use worker::{Date, Request};

fn store<'a>(cx: &'a Ctx) -> Conversations<'a, crate::fetch::FetchTransport> {
    Conversations { store: &cx.store, ttl_s: cx.settings.conversation_ttl_seconds }
}

fn new_conversation_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("crypto.getRandomValues is available in workers");
    ids::conversation_id_from(b)
}

pub(super) async fn create(req: &mut Request, cx: &Ctx<'_>) -> Answer {
    let body = read_json(req, cx.settings).await?;
    let create = CreateRequest::parse(&body)?;
    if let Some(m) = &create.model {
        if !cx.pool.serves(m) {
            return Err(RouterError::UnknownModel { model: m.clone() });
        }
    }
    let v = store(cx).create(&new_conversation_id(), &cx.caller.client_id, &create, Date::now().as_millis()).await?;
    respond::json(201, &v)
}

pub(super) async fn get(cx: &Ctx<'_>, id: &str) -> Answer {
    respond::json(200, &store(cx).get(id, &cx.caller.client_id).await?)
}

pub(super) async fn delete(cx: &Ctx<'_>, id: &str) -> Answer {
    respond::json(200, &store(cx).delete(id, &cx.caller.client_id).await?)
}

pub(super) async fn messages(req: &Request, cx: &Ctx<'_>, id: &str) -> Answer {
    let (offset, limit) = conversations::page(&query(req))?;
    respond::json(200, &store(cx).messages(id, &cx.caller.client_id, offset, limit).await?)
}

pub(super) async fn list(req: &Request, cx: &Ctx<'_>) -> Answer {
    let (offset, limit) = conversations::page(&query(req))?;
    respond::json(200, &store(cx).list(&cx.caller.client_id, offset, limit).await?)
}
