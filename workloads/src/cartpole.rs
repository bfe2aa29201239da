//! CartPole-v1 in pure Rust: the environment the RL workloads' data stage steps.
//!
//! Same dynamics and constants as Gym's `CartPoleEnv` (Barto, Sutton & Anderson 1983, Euler
//! integration): a step pushes the cart left (action 0) or right (action 1) with 10 N; the
//! episode terminates when |x| > 2.4 or |θ| > 12°, and is truncated after 500 steps. Every
//! step, including the last, yields reward 1. Reset draws the state uniformly in ±0.05 from
//! the environment's own seeded [`Rng`], so an episode sequence is reproducible and its
//! whole state ([`CartPoleState`]) can be checkpointed.

use crate::data::Rng;

pub const GRAVITY: f64 = 9.8;
pub const MASS_CART: f64 = 1.0;
pub const MASS_POLE: f64 = 0.1;
pub const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
/// Half the pole's length.
pub const LENGTH: f64 = 0.5;
pub const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
pub const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
pub const TAU: f64 = 0.02;
pub const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
pub const X_THRESHOLD: f64 = 2.4;
pub const MAX_STEPS: u32 = 500;

/// Observation size and number of actions.
pub const OBS_DIM: usize = 4;
pub const ACTIONS: usize = 2;

/// Everything that determines the environment's future: physical state `[x, ẋ, θ, θ̇]`,
/// steps into the episode, and the reset generator's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartPoleState {
    pub physics: [f64; 4],
    pub steps: u32,
    pub rng: u64,
}

/// What one step returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub obs: [f32; OBS_DIM],
    pub reward: f32,
    /// The pole fell or the cart left the track (no bootstrapping past this step).
    pub terminated: bool,
    /// The 500-step limit was reached.
    pub truncated: bool,
}

pub struct CartPole {
    physics: [f64; 4],
    steps: u32,
    rng: Rng,
}

impl CartPole {
    /// A fresh environment, already reset from `seed`.
    pub fn new(seed: u64) -> CartPole {
        let mut env = CartPole {
            physics: [0.0; 4],
            steps: 0,
            rng: Rng::new(seed),
        };
        env.reset();
        env
    }

    /// Starts a new episode and returns its first observation.
    pub fn reset(&mut self) -> [f32; OBS_DIM] {
        for v in &mut self.physics {
            *v = self.rng.range(-0.05, 0.05);
        }
        self.steps = 0;
        self.obs()
    }

    pub fn obs(&self) -> [f32; OBS_DIM] {
        self.physics.map(|v| v as f32)
    }

    /// Advances one `TAU` with the cart pushed left (`action == 0`) or right (otherwise).
    /// After a terminated or truncated step the caller must [`CartPole::reset`].
    pub fn step(&mut self, action: usize) -> Step {
        let [x, x_dot, theta, theta_dot] = self.physics;
        let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.physics = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        self.steps += 1;
        let [x, _, theta, _] = self.physics;
        let terminated = !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
            || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        Step {
            obs: self.obs(),
            reward: 1.0,
            terminated,
            truncated: !terminated && self.steps >= MAX_STEPS,
        }
    }

    pub fn state(&self) -> CartPoleState {
        CartPoleState {
            physics: self.physics,
            steps: self.steps,
            rng: self.rng.state(),
        }
    }

    pub fn set_state(&mut self, s: CartPoleState) {
        self.physics = s.physics;
        self.steps = s.steps;
        self.rng = Rng::new(s.rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_episode(env: &mut CartPole, policy: impl Fn(&[f32; 4]) -> usize) -> (u32, Step) {
        let mut obs = env.reset();
        let mut n = 0;
        loop {
            let s = env.step(policy(&obs));
            n += 1;
            obs = s.obs;
            if s.terminated || s.truncated {
                return (n, s);
            }
        }
    }

    #[test]
    fn reset_is_small_and_seeded() {
        let a = CartPole::new(3);
        let b = CartPole::new(3);
        assert_eq!(a.state(), b.state());
        assert!(a.obs().iter().all(|v| v.abs() <= 0.05));
        assert_ne!(CartPole::new(4).state().physics, a.state().physics);
    }

    #[test]
    fn one_step_matches_the_equations() {
        let mut env = CartPole::new(0);
        env.set_state(CartPoleState {
            physics: [0.0; 4],
            steps: 0,
            rng: 0,
        });
        let s = env.step(1);
        // From rest, pushing right: θ̈ = −(F/M) / (l (4/3 − m/M)), ẍ = F/M − m l θ̈ / M.
        let temp = FORCE_MAG / TOTAL_MASS;
        let theta_acc = -temp / (LENGTH * (4.0 / 3.0 - MASS_POLE / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc / TOTAL_MASS;
        let p = env.state().physics;
        assert_eq!(p[0], 0.0);
        assert!((p[1] - TAU * x_acc).abs() < 1e-12);
        assert_eq!(p[2], 0.0);
        assert!((p[3] - TAU * theta_acc).abs() < 1e-12);
        assert!(p[3] < 0.0, "pushing the cart right tips the pole left");
        assert_eq!(s.reward, 1.0);
        assert!(!s.terminated && !s.truncated);
    }

    #[test]
    fn constant_push_terminates_quickly() {
        let mut env = CartPole::new(1);
        let (n, last) = run_episode(&mut env, |_| 1);
        assert!(last.terminated);
        assert!((5..60).contains(&n), "{n} steps");
    }

    #[test]
    fn balancing_controller_reaches_the_step_cap() {
        // Push towards the side the pole is falling to: keeps it up for the full episode.
        let mut env = CartPole::new(2);
        let (n, last) = run_episode(&mut env, |o| usize::from(o[2] + 0.5 * o[3] > 0.0));
        assert_eq!(n, MAX_STEPS);
        assert!(last.truncated && !last.terminated);
    }

    #[test]
    fn state_round_trip_reproduces_the_future() {
        let mut a = CartPole::new(9);
        for i in 0..7 {
            a.step(i % 2);
        }
        let mut b = CartPole::new(0);
        b.set_state(a.state());
        for i in 0..30 {
            assert_eq!(a.step(i % 3 % 2), b.step(i % 3 % 2));
        }
        assert_eq!(a.reset(), b.reset());
    }
}
