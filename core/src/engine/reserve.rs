//! Phase 2: one round trip that picks a key among the offered candidates and reserves the
//! estimate on it, atomically with the caller's buckets and the conversation's lock.

use super::plan::{buckets, Plan};
use super::ports::QuotaStore;
use super::{Caller, Router};
use crate::config::KeyConfig;
use crate::error::{LimitKind, RouterError};
use crate::store::upstash::StoreError;
use crate::store::{ConvLock, Reservation, ReserveSpec};

/// What one step of the walk may reserve: keys of one model, in the pool's order (the
/// reservation script weighs them).
pub(super) struct Offer<'p> {
    pub model: String,
    pub keys: Vec<&'p KeyConfig>,
}

/// A key reserved for one attempt.
pub(super) struct Granted<'p> {
    pub key: &'p KeyConfig,
    /// The conversation's model, when the reservation picked it (`pick_model`).
    pub chosen_model: Option<String>,
    /// The Pacific day the reservation counted against, echoed in the settle.
    pub day: i64,
    /// The conversation's stored turns and system instruction.
    pub history: Vec<String>,
    pub system: Option<String>,
    /// What the reservation debited from the caller's budget, for the settle to correct.
    pub budget: Option<crate::store::BudgetSettle>,
    /// The oldest stored turns the script did not read back (outside the context budget).
    pub skipped: usize,
}

/// Strips the `{"skipped":n}` marker `reserve_v1` puts first when it read only the newest turns.
fn split_skipped(mut history: Vec<String>) -> (Vec<String>, usize) {
    let skipped = history
        .first()
        .and_then(|t| t.strip_prefix("{\"skipped\":"))
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|n| n.parse::<usize>().ok());
    match skipped {
        Some(n) => {
            history.remove(0);
            (history, n)
        }
        None => (history, 0),
    }
}

/// Why no key was reserved.
pub(super) enum Denied {
    /// A limit said "not now": a value that says when to come back, which the walk may answer
    /// by trying the next model of the fallback chain.
    Refused { limit: LimitKind, retry_after_ms: Option<u64>, bucket: Option<(u64, u64)> },
    /// Nothing else can be tried.
    Stop(RouterError),
}

impl<'a, Q: QuotaStore, U, R> Router<'a, Q, U, R> {
    pub(super) async fn reserve(
        &self,
        plan: &Plan,
        offer: Offer<'a>,
        rid: String,
        caller: &Caller,
        conv: Option<ConvLock>,
        first: bool,
    ) -> Result<Granted<'a>, Denied> {
        let model = offer.model.clone();
        let spec = ReserveSpec {
            rid,
            est: plan.est,
            window_ms: self.settings.window_ms,
            cfg: self.cfg_fingerprint.clone(),
            // The caller's and the global rate count requests, not attempts.
            buckets: if first { buckets(self.settings, caller) } else { vec![] },
            conv,
            budget: caller.budget(),
            owned: plan.owned.clone(),
            candidates: offer.keys,
            model: Some(offer.model),
        };
        let answer = self.store.reserve(&spec).await.map_err(|e| Denied::Stop(e.into()))?;
        match answer {
            Reservation::Reserved { key_id, day, history, system, model: chosen_model, est, .. } => {
                let Some(key) = self.pool.keys.iter().find(|k| k.key_id == key_id) else {
                    let e = StoreError::Protocol(format!("reserve_v1 chose unknown key '{key_id}'"));
                    return Err(Denied::Stop(e.into()));
                };
                let budget =
                    spec.budget.as_ref().map(|b| crate::store::BudgetSettle { client: b.client.clone(), day, est });
                let (history, skipped) = split_skipped(history);
                Ok(Granted { key, chosen_model, day, history, system, skipped, budget })
            }
            Reservation::NoCandidates => Err(Denied::Stop(RouterError::UnknownModel { model })),
            Reservation::Refused { limit, retry_at, now, bucket } => {
                Err(Denied::Refused { limit, retry_after_ms: retry_at.map(|t| t.saturating_sub(now)), bucket })
            }
            Reservation::PromptTooLarge => Err(Denied::Stop(RouterError::PromptTooLarge { estimate: plan.est })),
            Reservation::ConversationNotFound => Err(Denied::Stop(RouterError::ConversationNotFound)),
            Reservation::ConversationBusy => Err(Denied::Stop(RouterError::ConversationBusy)),
        }
    }
}
