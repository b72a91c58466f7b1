//! The long fuzzing run: every target in turn, in batches, until `FUZZ_SECONDS` (default 60)
//! have passed. Prints the cases executed per target; exits 1 on the first property failure
//! (with proptest's shrunk input) or panic.
//!
//!     FUZZ_SECONDS=600 cargo run --release -p llm-key-router-fuzz --bin fuzz-long

use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let batch: u32 = std::env::var("FUZZ_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    // Panics inside properties are caught and reported by proptest; keep stderr readable.
    std::panic::set_hook(Box::new(|_| {}));
    let targets = llm_key_router_fuzz::targets();
    let mut counts = vec![0u64; targets.len()];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        for (i, (name, target)) in targets.iter().enumerate() {
            if let Err(e) = target(&mut llm_key_router_fuzz::runner(batch)) {
                println!("FAILURE in {name} after {} cases:\n{e}", counts[i]);
                std::process::exit(1);
            }
            counts[i] += batch as u64;
        }
        rounds += 1;
        let total: u64 = counts.iter().sum();
        eprintln!("[{:>5}s] round {rounds}: {total} cases, 0 failures", started.elapsed().as_secs());
    }
    println!("fuzz-long: {} s, {} rounds, 0 failures", started.elapsed().as_secs(), rounds);
    for ((name, _), n) in targets.iter().zip(&counts) {
        println!("  {n:>10}  {name}");
    }
    println!("  {:>10}  total", counts.iter().sum::<u64>());
}
