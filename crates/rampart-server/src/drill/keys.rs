//! How `{key}` is chosen: [`KeySpace`] (the `--keys` spec) and
//! [`KeySampler`] (uniform, range and Zipf draws from a seeded SplitMix64).

use hyper::Uri;

use super::config::DrillError;

/// Zipf exponent used when `--keys zipf:MAX` gives none (YCSB's default).
pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.99;

/// How the `{key}` placeholder of a target is filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum KeySpace {
    /// Always the same key.
    Fixed(String),
    /// Keys `1..=max`, uniformly.
    Uniform { max: u64 },
    /// Keys `low..=high`, uniformly: with a range past the last row, a
    /// storm of distinct missing keys (cache penetration).
    Range { low: u64, high: u64 },
    /// Keys `1..=max`, key `k` with probability proportional to
    /// `1 / k^exponent` (key 1 hottest).
    Zipf { max: u64, exponent: f64 },
}

impl KeySpace {
    /// Checks the parameters; the message names the `--keys` flag.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Fixed(key) if key.is_empty() => {
                Err("--keys fixed:KEY needs a non-empty KEY".to_owned())
            }
            Self::Fixed(key) if Uri::try_from(format!("/{key}")).is_err() => Err(format!(
                "--keys fixed:{key}: the key has characters not allowed in a URL path \
                 (percent-encode them)"
            )),
            Self::Fixed(_) => Ok(()),
            Self::Uniform { max: 0 } => Err("--keys uniform:MAX needs MAX >= 1".to_owned()),
            Self::Uniform { .. } => Ok(()),
            Self::Range { low, high } if low > high => Err(format!(
                "--keys range:LOW:HIGH needs LOW <= HIGH (got {low} > {high})"
            )),
            Self::Range { .. } => Ok(()),
            Self::Zipf { max: 0, .. } => Err("--keys zipf:MAX needs MAX >= 1".to_owned()),
            Self::Zipf { exponent, .. } if !(exponent.is_finite() && *exponent > 0.0) => Err(
                format!("--keys zipf:MAX:EXP needs a finite EXP > 0 (got {exponent})"),
            ),
            Self::Zipf { .. } => Ok(()),
        }
    }
}

impl std::fmt::Display for KeySpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(key) => write!(f, "fixed:{key}"),
            Self::Uniform { max } => write!(f, "uniform:{max}"),
            Self::Range { low, high } => write!(f, "range:{low}:{high}"),
            Self::Zipf { max, exponent } => write!(f, "zipf:{max}:{exponent}"),
        }
    }
}

/// Parses `fixed:KEY`, `uniform:MAX`, `range:LOW:HIGH` or `zipf:MAX[:EXP]` (EXP defaults to
/// [`DEFAULT_ZIPF_EXPONENT`]).
pub fn parse_keys(spec: &str) -> Result<KeySpace, String> {
    let (kind, rest) = spec.split_once(':').ok_or_else(|| {
        format!("`{spec}`: expected fixed:KEY, uniform:MAX, range:LOW:HIGH or zipf:MAX[:EXP]")
    })?;
    let parse_max = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("`{spec}`: MAX must be a whole number >= 1, got `{s}`"))
    };
    let space = match kind {
        "fixed" => KeySpace::Fixed(rest.to_owned()),
        "uniform" => KeySpace::Uniform {
            max: parse_max(rest)?,
        },
        "range" => {
            let (low, high) = rest
                .split_once(':')
                .ok_or_else(|| format!("`{spec}`: expected range:LOW:HIGH"))?;
            let bound = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("`{spec}`: LOW and HIGH must be whole numbers, got `{s}`"))
            };
            KeySpace::Range {
                low: bound(low)?,
                high: bound(high)?,
            }
        }
        "zipf" => {
            let (max, exponent) = match rest.split_once(':') {
                Some((max, exp)) => (
                    parse_max(max)?,
                    exp.parse::<f64>()
                        .map_err(|_| format!("`{spec}`: EXP must be a number, got `{exp}`"))?,
                ),
                None => (parse_max(rest)?, DEFAULT_ZIPF_EXPONENT),
            };
            KeySpace::Zipf { max, exponent }
        }
        other => {
            return Err(format!(
                "`{spec}`: unknown key space `{other}` (expected fixed, uniform, range or zipf)"
            ))
        }
    };
    space.validate()?;
    Ok(space)
}

/// SplitMix64: small, fast, good enough for picking keys.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; bias below 2^-64 * n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Zipf sampler over `1..=n` by rejection-inversion (Hörmann & Derflinger,
/// "Rejection-inversion to generate variates from monotone discrete
/// distributions", 1996), in the form that works for every exponent > 0:
/// O(1) memory and expected O(1) time, whatever `n`.
#[derive(Clone, Debug)]
struct Zipf {
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    fn new(n: u64, exponent: f64) -> Self {
        let mut z = Self {
            n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.s = 2.0 - z.h_integral_inv(z.h_integral(2.5) - z.h(2.0));
        z
    }

    fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inv(u);
            // `as` saturates; clamp into range against rounding.
            let k = ((x + 0.5) as u64).clamp(1, self.n);
            let kf = k as f64;
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    /// `h(x) = x^-exponent`, the (unnormalised) mass function.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// `H(x) = (x^(1-e) - 1) / (1-e)`, with its limit `ln x` at `e = 1`.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[derive(Clone, Debug)]
enum KeyKind {
    Fixed(String),
    Uniform(u64),
    Range(u64, u64),
    Zipf(Zipf),
}

/// Draws keys from a [`KeySpace`]; one per connection, so no sharing.
#[derive(Clone, Debug)]
pub struct KeySampler {
    rng: SplitMix64,
    kind: KeyKind,
}

impl KeySampler {
    /// A sampler seeded with `seed` (same seed, same keys).
    pub fn new(space: &KeySpace, seed: u64) -> Result<Self, DrillError> {
        space.validate().map_err(DrillError::InvalidConfig)?;
        let kind = match space {
            KeySpace::Fixed(key) => KeyKind::Fixed(key.clone()),
            KeySpace::Uniform { max } => KeyKind::Uniform(*max),
            KeySpace::Range { low, high } => KeyKind::Range(*low, *high),
            KeySpace::Zipf { max, exponent } => KeyKind::Zipf(Zipf::new(*max, *exponent)),
        };
        Ok(Self {
            rng: SplitMix64(seed),
            kind,
        })
    }

    /// The next key, as it goes into the URL.
    pub fn next_key(&mut self) -> String {
        match &self.kind {
            KeyKind::Fixed(key) => key.clone(),
            KeyKind::Uniform(max) => (1 + self.rng.below(*max)).to_string(),
            KeyKind::Range(low, high) => {
                let span = high - low;
                let offset = match span.checked_add(1) {
                    Some(n) => self.rng.below(n),
                    None => self.rng.next_u64(),
                };
                (low + offset).to_string()
            }
            KeyKind::Zipf(zipf) => zipf.sample(&mut self.rng).to_string(),
        }
    }
}
