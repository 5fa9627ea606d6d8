//! A compositional split of the shapes world: some (colour, kind, position)
//! triples never occur in training, so a model is judged on combinations of
//! words it has seen, but never together.
//!
//! The held-out triples are drawn from a seed under one constraint: every
//! pair of their attributes (colour+kind, colour+position, kind+position)
//! still occurs in some training triple. A model can only generalise to "a
//! red star at the top" if it has seen red stars, red things at the top and
//! stars at the top.

use super::caption::parse_caption;
use super::scene::Scene;
use super::vocab::{Color, Kind, Position};
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One object's colour, kind and position.
pub type Triple = (Color, Kind, Position);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldOut {
    pub triples: BTreeSet<Triple>,
}

/// The file form of [`HeldOut`]: readable triples such as "red star at the top".
#[derive(Serialize, Deserialize)]
struct HeldOutFile {
    held_out_triples: Vec<String>,
}

impl HeldOut {
    /// Holds out `fraction` of all triples (rounded down), drawn with `seed`,
    /// skipping any triple whose removal would leave one of its pairs with
    /// no training triple.
    pub fn choose(fraction: f64, seed: u64) -> Result<HeldOut> {
        if !(0.0..0.5).contains(&fraction) {
            return Err(Error::Invalid(format!("the held-out fraction of triples must be in [0, 0.5), got {fraction}")));
        }
        let mut all: Vec<Triple> = Vec::new();
        for &c in Color::ALL {
            for &k in Kind::ALL {
                for &p in Position::ALL {
                    all.push((c, k, p));
                }
            }
        }
        let wanted = (fraction * all.len() as f64).floor() as usize;
        all.shuffle(&mut StdRng::seed_from_u64(seed));
        // Training triples left for each pair.
        let mut ck: BTreeMap<(Color, Kind), usize> = BTreeMap::new();
        let mut cp: BTreeMap<(Color, Position), usize> = BTreeMap::new();
        let mut kp: BTreeMap<(Kind, Position), usize> = BTreeMap::new();
        for &(c, k, p) in &all {
            *ck.entry((c, k)).or_default() += 1;
            *cp.entry((c, p)).or_default() += 1;
            *kp.entry((k, p)).or_default() += 1;
        }
        let mut triples = BTreeSet::new();
        for &(c, k, p) in &all {
            if triples.len() == wanted {
                break;
            }
            let counts = [ck[&(c, k)], cp[&(c, p)], kp[&(k, p)]];
            if counts.iter().any(|&n| n <= 1) {
                continue;
            }
            *ck.entry((c, k)).or_default() -= 1;
            *cp.entry((c, p)).or_default() -= 1;
            *kp.entry((k, p)).or_default() -= 1;
            triples.insert((c, k, p));
        }
        Ok(HeldOut { triples })
    }

    /// Whether any object of `scene` is a held-out triple.
    pub fn touches(&self, scene: &Scene) -> bool {
        scene.objects.iter().any(|o| self.triples.contains(&(o.color, o.kind, o.position)))
    }

    /// The held-out triples a caption names (objects without a colour or a
    /// position name none). Errors when the caption cannot be parsed.
    pub fn triples_in(&self, caption: &str) -> Result<Vec<Triple>> {
        Ok(parse_caption(caption)?
            .into_iter()
            .filter_map(|s| Some((s.color?, s.kind, s.position?)))
            .filter(|t| self.triples.contains(t))
            .collect())
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        let file = HeldOutFile { held_out_triples: self.triples.iter().map(|t| triple_phrase(*t)).collect() };
        serde_json::to_vec_pretty(&file).map_err(|e| Error::Invalid(format!("serialising the held-out triples: {e}")))
    }

    /// Reads what [`HeldOut::to_json`] wrote; `origin` names the file in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<HeldOut> {
        let file: HeldOutFile = serde_json::from_slice(bytes).map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        let mut triples = BTreeSet::new();
        for phrase in &file.held_out_triples {
            let specs = parse_caption(phrase).map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
            match specs.as_slice() {
                [s] if s.color.is_some() && s.position.is_some() => {
                    triples.insert((s.color.unwrap_or(Color::Red), s.kind, s.position.unwrap_or(Position::Center)));
                }
                _ => return Err(Error::Invalid(format!("{origin}: {phrase:?} is not one object with a colour, a shape and a position"))),
            }
        }
        Ok(HeldOut { triples })
    }
}

/// "red star at the top" (parses back with the caption grammar).
pub fn triple_phrase((c, k, p): Triple) -> String {
    format!("{c} {k} {}", p.phrase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_of_a_held_out_triple_stays_in_training() {
        let held = HeldOut::choose(0.2, 7).expect("valid fraction");
        assert_eq!(held.triples.len(), (0.2f64 * 216.0) as usize);
        for &(c, k, p) in &held.triples {
            let trains = |f: &dyn Fn(&Triple) -> bool| {
                Color::ALL.iter().flat_map(|&c2| Kind::ALL.iter().flat_map(move |&k2| Position::ALL.iter().map(move |&p2| (c2, k2, p2))))
                    .filter(|t| f(t) && !held.triples.contains(t))
                    .count()
            };
            assert!(trains(&|t| t.0 == c && t.1 == k) > 0);
            assert!(trains(&|t| t.0 == c && t.2 == p) > 0);
            assert!(trains(&|t| t.1 == k && t.2 == p) > 0);
        }
        let back = HeldOut::from_json(&held.to_json().expect("json"), "test").expect("reads back");
        assert_eq!(back, held);
        assert!(HeldOut::choose(0.6, 0).is_err());
    }
}
