//! Redis key names. Inputs are validated names (`config::valid_name`, conversation ids), so no
//! caller-controlled byte can form another key.
//!
//! Every key carries the `{llmr}` hash tag, so each script call touches one Cluster slot.
//! That puts the router's state on one shard, which is what an atomic multi-key choice needs.

pub const LAST_USED: &str = "{llmr}:last";
pub const GLOBAL_STATS: &str = "{llmr}:st:global";
pub const GLOBAL_BUCKET: &str = "{llmr}:bucket:global";
/// The admin audit list (`admin_v1` writes it, `stats_v1` reads its head).
pub const AUDIT: &str = "{llmr}:audit";

pub fn log(group: &str, model: &str) -> String {
    format!("{{llmr}}:w:{group}:{model}")
}
pub fn tokens(group: &str, model: &str) -> String {
    format!("{{llmr}}:t:{group}:{model}")
}
pub fn day(group: &str, model: &str) -> String {
    format!("{{llmr}}:d:{group}:{model}")
}
pub fn cooldown(group: &str, model: &str) -> String {
    format!("{{llmr}}:cd:{group}:{model}")
}
pub fn disabled(key_id: &str) -> String {
    format!("{{llmr}}:dis:{key_id}")
}
pub fn key_stats(key_id: &str) -> String {
    format!("{{llmr}}:st:k:{key_id}")
}
pub fn client_stats(client: &str) -> String {
    format!("{{llmr}}:st:c:{client}")
}
/// A client's token budget: its Pacific-day hash `{day, used}`, and its rolling-minute log
/// (ZSET rid -> ms) and tokens (HASH rid -> tokens, `_sum`).
pub fn client_budget_day(client: &str) -> String {
    format!("{{llmr}}:cb:d:{client}")
}
pub fn client_budget_log(client: &str) -> String {
    format!("{{llmr}}:cb:w:{client}")
}
pub fn client_budget_tokens(client: &str) -> String {
    format!("{{llmr}}:cb:t:{client}")
}
/// The owner record of a Files-API file or a cached content (`files/<id>`, `cachedContents/<id>`,
/// ids checked by `files::resource_name`): HASH {group, key, client, meta}.
pub fn resource(name: &str) -> String {
    format!("{{llmr}}:res:{name}")
}
/// A resumable upload session (`files`): HASH {key, up, client}. The SDK sends the upload's data
/// without any credential (Google's upload URL is its own), so the session id, random and
/// unguessable, is what authorizes it.
pub fn upload_session(id: &str) -> String {
    format!("{{llmr}}:upl:{id}")
}
/// The resources a client created: SET of names.
pub fn client_resources(client: &str) -> String {
    format!("{{llmr}}:res:c:{client}")
}
pub fn client_bucket(client: &str) -> String {
    format!("{{llmr}}:bucket:c:{client}")
}
pub fn conv_meta(id: &str) -> String {
    format!("{{llmr}}:conv:{id}")
}
pub fn conv_turns(id: &str) -> String {
    format!("{{llmr}}:conv:{id}:turns")
}
pub fn conv_lock(id: &str) -> String {
    format!("{{llmr}}:conv:{id}:lock")
}
pub fn client_convs(client: &str) -> String {
    format!("{{llmr}}:convs:{client}")
}
