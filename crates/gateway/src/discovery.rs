//! DNS pools: a back-end URL such as `riva+dns://riva-headless.speech.svc:50051` names
//! every address its host resolves to (a Kubernetes headless Service lists one per ready
//! pod). Each address is a back end of its own — connections, health, breaker, capacity
//! — named by its address URL (`riva://10.0.3.7:50051`).
//!
//! One task per pool re-resolves the name every `dns.interval`, or sooner when the
//! answer's TTL runs out (never more often than once a second), and hands the address
//! set to the router: new addresses join (and are probed at once), an address that is
//! gone takes no new sessions while its live sessions carry on until their stream ends
//! or fails — then they fail over, replaying their audio, like any failover. A name that
//! stops resolving (an error, NXDOMAIN, an empty answer) keeps the last good set: a DNS
//! outage must not empty a working pool. `/status` shows each pool's address count and
//! its last problem; `sgw_dns_resolutions_total{pool,outcome}` counts the lookups.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, SpeechBackend};
use crate::config::{BackendUrl, Config, DnsSettings};
use crate::router::Router;

/// Never re-resolve more often than this, whatever the TTL says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The resolver every pool uses: the configured name servers, or the system's.
pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Each re-resolution asks the server: the pool task keeps its own schedule (the TTL).
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

/// The addresses `url`'s host resolves to (sorted, without repeats) and how long the
/// answer is good for.
pub async fn resolve(
    resolver: &TokioResolver,
    url: &BackendUrl,
) -> Result<(Vec<IpAddr>, Duration), String> {
    // A trailing dot: the name is absolute (no search-domain guessing).
    let name = if url.host.ends_with('.') || url.host.parse::<IpAddr>().is_ok() {
        url.host.clone()
    } else {
        format!("{}.", url.host)
    };
    let lookup = resolver
        .lookup_ip(name.as_str())
        .await
        .map_err(|e| format!("`{}` does not resolve: {e}", url.host))?;
    let ttl = lookup
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    let mut ips: Vec<IpAddr> = lookup.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(format!("`{}` resolves to no address", url.host));
    }
    Ok((ips, ttl))
}

/// Keeps pool `url` up to date in `router` until `stop`.
pub async fn run_pool(
    router: Arc<Router>,
    resolver: Arc<TokioResolver>,
    url: BackendUrl,
    config: Arc<Config>,
    stop: CancellationToken,
) {
    let pool = url.url.clone();
    let interval = config.dns.interval;
    loop {
        let wait = match resolve(&resolver, &url).await {
            Ok((ips, ttl)) => {
                router.metrics().dns_resolution(&pool, "ok");
                let members: Vec<BackendUrl> = ips.iter().map(|ip| url.at_address(*ip)).collect();
                let names: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
                let make = |name: &str| -> Option<Arc<dyn SpeechBackend>> {
                    let member = members.iter().find(|m| m.url == name)?;
                    match backend::connect(member, &config, router.metrics()) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            tracing::warn!(pool = %pool, backend = name, error = %e, "cannot use a pool address");
                            None
                        }
                    }
                };
                let joined = router.update_pool(&pool, &names, &make);
                if !joined.is_empty() {
                    tracing::info!(pool = %pool, joined = joined.len(), addresses = names.len(), "DNS pool changed");
                    router.check(&joined).await;
                }
                ttl.clamp(MIN_INTERVAL, interval)
            }
            Err(problem) => {
                router.metrics().dns_resolution(&pool, "failed");
                tracing::warn!(pool = %pool, problem = %problem, "DNS pool not resolved: keeping the last good addresses");
                router.pool_problem(&pool, problem);
                MIN_INTERVAL.max(interval / 2)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
