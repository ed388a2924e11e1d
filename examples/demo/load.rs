//! The built-in load: N concurrent streaming users over real HTTP against the demo itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tower_stream_monitor::parse::{StreamParser, WireFormat};

/// The providers a user can call, with their request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Provider {
    /// From the `--mix` and `--slow-down` names (`gemini` or `gcp.gemini`).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            "gemini" | "gcp.gemini" => Ok(Provider::Gemini),
            other => Err(format!(
                "unknown provider {other:?} (openai, anthropic, gemini)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gcp.gemini",
        }
    }

    fn request(self, client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        match self {
            Provider::OpenAi => {
                client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&serde_json::json!({
                "model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Read the cards."}]}))
            }
            Provider::Anthropic => {
                client
                    .post(format!("{base}/v1/messages"))
                    .json(&serde_json::json!({
                "model": "claude-sonnet-4-5", "stream": true, "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Read the cards."}]}))
            }
            Provider::Gemini => client
                .post(format!(
                    "{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
                ))
                .json(&serde_json::json!({"contents": [{"parts": [{"text": "Read the cards."}]}]})),
        }
    }
}

/// Shares of traffic per provider (`openai=50,anthropic=30,gemini=20`).
#[derive(Debug, Clone)]
pub struct Mix(pub Vec<(Provider, u32)>);

impl Default for Mix {
    fn default() -> Self {
        Mix(vec![
            (Provider::OpenAi, 50),
            (Provider::Anthropic, 30),
            (Provider::Gemini, 20),
        ])
    }
}

impl Mix {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| format!("--mix: {part:?} is not name=share"))?;
            let provider = Provider::parse(name.trim()).map_err(|e| format!("--mix: {e}"))?;
            let share: u32 = share
                .trim()
                .parse()
                .map_err(|_| format!("--mix: share of {name} must be a whole number"))?;
            out.push((provider, share));
        }
        let total = out.iter().try_fold(0u32, |sum, (_, s)| sum.checked_add(*s));
        match total {
            Some(0) => return Err("--mix: shares add up to 0".into()),
            None => return Err("--mix: shares add up to more than 4294967295".into()),
            Some(_) => {}
        }
        Ok(Mix(out))
    }

    /// The provider of the `k`-th request, by a multiplicative hash of `k` into the shares:
    /// spread over the run, and the shares hold over many requests (not over every few).
    pub fn pick(&self, k: u64) -> Provider {
        let total: u64 = self.0.iter().map(|(_, s)| *s as u64).sum();
        let slot = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % total;
        let mut acc = 0;
        for (p, s) in &self.0 {
            acc += *s as u64;
            if slot < acc {
                return *p;
            }
        }
        self.0[0].0
    }
}

/// Failures injected into the load, in turn.
const INJECTED: [&str; 4] = ["server", "stream_error", "rate_limit", "auth"];

/// Whether request `k` gets an injected failure: exactly `rate` of any prefix of requests,
/// rounded down, so totals are predictable.
pub fn injected_failure(k: u64, rate: f64) -> Option<&'static str> {
    let before = (k as f64 * rate).floor() as u64;
    let after = ((k + 1) as f64 * rate).floor() as u64;
    (after > before).then(|| INJECTED[(before % INJECTED.len() as u64) as usize])
}

/// What the client saw of one request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub provider: Provider,
    pub status: u16,
    pub ttft: Option<Duration>,
    pub tokens: u64,
    pub tokens_per_second: Option<f64>,
    pub injected: Option<&'static str>,
    pub transport_error: bool,
    /// The body carried an error event (a 200 whose stream failed, as a timeout's).
    pub stream_error: bool,
    /// From send to the body's end (or the failure), as the client saw it.
    pub duration: Duration,
    /// When the client saw the request end: the report matches it against the monitor's
    /// windows, which place a request by when it ended.
    pub finished: SystemTime,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub base: String,
    pub users: usize,
    /// Stop after this long (None: run until `stop` is set).
    pub duration: Option<Duration>,
    /// Or stop each user after this many requests.
    pub requests_per_user: Option<u64>,
    pub mix: Mix,
    pub fail_rate: f64,
    /// Extra headers on every request (simulation knobs).
    pub headers: Vec<(String, String)>,
    /// One provider's first token made slower from some time into the run on.
    pub slow_down: Option<SlowDown>,
}

/// `--slow-down PROVIDER=MS@SECONDS`: from `after` into the run, the provider's requests ask
/// the simulator for a first token after `ttft_ms` (its default is 200 ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowDown {
    pub provider: Provider,
    pub ttft_ms: u64,
    pub after: Duration,
}

impl SlowDown {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("--slow-down: {s:?} is not PROVIDER=MS@SECONDS, e.g. openai=800@60");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (ms, after) = rest.split_once('@').ok_or_else(bad)?;
        let provider = Provider::parse(name.trim())?;
        let ttft_ms: u64 = ms.trim().parse().map_err(|_| bad())?;
        let after: f64 = after.trim().parse().map_err(|_| bad())?;
        if !(1..=60_000).contains(&ttft_ms) || !(0.0..=86_400.0).contains(&after) {
            return Err("--slow-down: MS from 1 to 60000, SECONDS from 0 to 86400".into());
        }
        Ok(Self {
            provider,
            ttft_ms,
            after: Duration::from_secs_f64(after),
        })
    }
}

/// Runs the load; `on_sample` sees each finished request (the progress bar).
pub async fn run(
    options: LoadOptions,
    stop: Arc<AtomicBool>,
    on_sample: impl Fn(&Sample) + Send + Sync + 'static,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.users)
        .build()
        .expect("an HTTP client");
    let counter = Arc::new(AtomicU64::new(0));
    let on_sample = Arc::new(on_sample);
    let began = Instant::now();
    let deadline = options.duration.map(|d| began + d);
    let options = Arc::new(options);
    let mut users = Vec::new();
    for _ in 0..options.users {
        let (client, counter, stop, options, on_sample) = (
            client.clone(),
            counter.clone(),
            stop.clone(),
            options.clone(),
            on_sample.clone(),
        );
        users.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut done = 0;
            loop {
                if stop.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                    || options.requests_per_user.is_some_and(|n| done >= n)
                {
                    break;
                }
                let k = counter.fetch_add(1, Ordering::Relaxed);
                let sample = one_request(&client, &options, k, began.elapsed()).await;
                on_sample(&sample);
                samples.push(sample);
                done += 1;
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for user in users {
        all.extend(user.await.unwrap_or_default());
    }
    all
}

async fn one_request(
    client: &reqwest::Client,
    options: &LoadOptions,
    k: u64,
    into_run: Duration,
) -> Sample {
    let provider = options.mix.pick(k);
    let injected = injected_failure(k, options.fail_rate);
    let mut request = provider
        .request(client, &options.base)
        .header("accept", "text/event-stream");
    for (name, value) in &options.headers {
        request = request.header(name, value);
    }
    if let Some(fail) = injected {
        request = request.header("x-sim-fail", fail);
    }
    if let Some(slow) = options
        .slow_down
        .filter(|s| s.provider == provider && into_run >= s.after)
    {
        request = request.header("x-sim-ttft-ms", slow.ttft_ms.to_string());
    }
    let mut sample = Sample {
        provider,
        status: 0,
        ttft: None,
        tokens: 0,
        tokens_per_second: None,
        injected,
        transport_error: false,
        stream_error: false,
        duration: Duration::ZERO,
        finished: SystemTime::now(),
    };
    let started = Instant::now();
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(_) => {
            sample.transport_error = true;
            sample.duration = started.elapsed();
            sample.finished = SystemTime::now();
            return sample;
        }
    };
    sample.status = response.status().as_u16();
    // The client measures with the crate's own parser: TTFT from send to the first chunk that
    // completes a content event, and the tokens.
    let mut parser = StreamParser::new(WireFormat::Sse);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if parser.feed(&chunk) > 0 && sample.ttft.is_none() {
                    sample.ttft = Some(started.elapsed());
                }
            }
            Ok(None) => break,
            Err(_) => {
                sample.transport_error = true;
                break;
            }
        }
    }
    sample.duration = started.elapsed();
    sample.finished = SystemTime::now();
    parser.finish();
    sample.tokens = parser.summary().output_tokens();
    sample.stream_error = parser.summary().error().is_some();
    if let Some(ttft) = sample.ttft {
        let generating = started.elapsed().saturating_sub(ttft).as_secs_f64();
        if sample.tokens >= 2 && generating > 0.0 {
            sample.tokens_per_second = Some(sample.tokens as f64 / generating);
        }
    }
    sample
}

/// The value at quantile `q` of `values` (sorted in place), 0 when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// xorshift64*: reproducible randomness without a dependency (the soak and the hostile-traffic
/// test draw their requests from it).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
