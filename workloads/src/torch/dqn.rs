//! RL family: DQN on the Rust CartPole.
//!
//! The data stage is environment interaction: `steps_per_iter` ε-greedy actions chosen by
//! the current online network (forward under `no_grad`), stored in a replay buffer, then a
//! uniformly sampled minibatch of transitions. Compute is the TD loss (Huber) of the online
//! network against a target network that is copied from the online one every
//! `target_sync` iterations.

use anyhow::{ensure, Context};
use tch::{Reduction, Tensor};

use super::device::Mover;
use super::params::{Linear, ParamStore};
use super::state::{self, Loaded};
use super::Task;
use crate::cartpole::{CartPole, CartPoleState, ACTIONS, OBS_DIM};
use crate::data::Rng;

/// Size and schedule of the DQN learner.
#[derive(Debug, Clone, PartialEq)]
pub struct DqnConfig {
    pub hidden: i64,
    /// Environment steps per data stage.
    pub steps_per_iter: usize,
    pub replay_capacity: usize,
    /// Steps played (with ε = 1) before the first batch is sampled.
    pub warmup_steps: usize,
    pub gamma: f64,
    pub eps_start: f64,
    pub eps_end: f64,
    /// Environment steps over which ε decays linearly.
    pub eps_decay_steps: u64,
    /// Iterations between target-network copies.
    pub target_sync: u64,
}

/// f32s per stored transition: obs, action, reward, next obs, terminated.
const STRIDE: usize = 2 * OBS_DIM + 3;

/// Three-layer MLP Q-network.
struct QNet {
    layers: [Linear; 3],
}

impl QNet {
    fn new(s: &mut ParamStore, hidden: i64) -> anyhow::Result<QNet> {
        Ok(QNet {
            layers: [
                Linear::new(s, "q.l1", OBS_DIM as i64, hidden)?,
                Linear::new(s, "q.l2", hidden, hidden)?,
                Linear::new(s, "q.l3", hidden, ACTIONS as i64)?,
            ],
        })
    }

    fn frozen_copy(&self, s: &mut ParamStore) -> anyhow::Result<QNet> {
        Ok(QNet {
            layers: [
                self.layers[0].frozen_copy(s, "target.l1")?,
                self.layers[1].frozen_copy(s, "target.l2")?,
                self.layers[2].frozen_copy(s, "target.l3")?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let h = self.layers[0].forward(x)?.f_relu()?;
        let h = self.layers[1].forward(&h)?.f_relu()?;
        self.layers[2].forward(&h)
    }

    /// Copies `src`'s weights into this network (target sync).
    fn copy_from(&self, src: &QNet) -> anyhow::Result<()> {
        for (dst, src) in self.layers.iter().zip(&src.layers) {
            for (d, s) in dst.tensors().into_iter().zip(src.tensors()) {
                state::copy_into(d, s)?;
            }
        }
        Ok(())
    }
}

/// Ring buffer of transitions, flat f32s so it checkpoints as one tensor.
struct Replay {
    data: Vec<f32>,
    capacity: usize,
    len: usize,
    next: usize,
}

impl Replay {
    fn push(
        &mut self,
        obs: &[f32; OBS_DIM],
        action: usize,
        reward: f32,
        next: &[f32; OBS_DIM],
        done: bool,
    ) {
        let row = &mut self.data[self.next * STRIDE..(self.next + 1) * STRIDE];
        row[..OBS_DIM].copy_from_slice(obs);
        row[OBS_DIM] = action as f32;
        row[OBS_DIM + 1] = reward;
        row[OBS_DIM + 2..2 * OBS_DIM + 2].copy_from_slice(next);
        row[2 * OBS_DIM + 2] = f32::from(u8::from(done));
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }
}

/// A sampled minibatch.
struct Transitions {
    obs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_obs: Tensor,
    done: Tensor,
}

/// A DQN job.
pub struct DqnTask {
    online: QNet,
    target: QNet,
    mover: Mover,
    cfg: DqnConfig,
    env: CartPole,
    replay: Replay,
    rng: Rng,
    env_steps: u64,
    batch_size: usize,
    signature: String,
    pending: Option<Transitions>,
}

/// Builds the DQN learner on `mover`'s device; the environment and exploration streams
/// come from `seed`.
pub fn build(
    name: &str,
    cfg: &DqnConfig,
    batch_size: usize,
    seed: u64,
    mover: Mover,
) -> anyhow::Result<(DqnTask, ParamStore)> {
    ensure!(
        cfg.replay_capacity >= batch_size && cfg.steps_per_iter > 0,
        "{name}: replay capacity {} must hold a batch of {batch_size}",
        cfg.replay_capacity
    );
    let mut store = ParamStore::new(seed, mover.device());
    let online = QNet::new(&mut store, cfg.hidden)?;
    let target = online.frozen_copy(&mut store)?;
    let task = DqnTask {
        online,
        target,
        mover,
        env: CartPole::new(Rng::derive(seed, 30).next_u64()),
        replay: Replay {
            data: vec![0.0; cfg.replay_capacity * STRIDE],
            capacity: cfg.replay_capacity,
            len: 0,
            next: 0,
        },
        rng: Rng::derive(seed, 31),
        env_steps: 0,
        batch_size,
        signature: format!("rl {name}: {cfg:?}, cartpole"),
        cfg: cfg.clone(),
        pending: None,
    };
    Ok((task, store))
}

impl DqnTask {
    fn epsilon(&self) -> f64 {
        let frac = (self.env_steps as f64 / self.cfg.eps_decay_steps.max(1) as f64).min(1.0);
        self.cfg.eps_start + (self.cfg.eps_end - self.cfg.eps_start) * frac
    }

    /// ε-greedy action from the online network.
    fn act(&mut self, obs: &[f32; OBS_DIM], warmup: bool) -> anyhow::Result<usize> {
        if warmup || self.rng.uniform() < self.epsilon() {
            return Ok(self.rng.below(ACTIONS as u64) as usize);
        }
        let _guard = tch::no_grad_guard();
        let [obs] = self
            .mover
            .to_device([Tensor::f_from_slice(obs)?.f_view([1, OBS_DIM as i64])?])?;
        let q = self.online.forward(&obs)?;
        Ok(q.f_argmax(1, false)?.f_int64_value(&[0])? as usize)
    }

    /// Plays `steps` environment steps into the replay buffer.
    fn play(&mut self, steps: usize, warmup: bool) -> anyhow::Result<()> {
        for _ in 0..steps {
            let obs = self.env.obs();
            let action = self.act(&obs, warmup)?;
            let s = self.env.step(action);
            self.replay
                .push(&obs, action, s.reward, &s.obs, s.terminated);
            self.env_steps += 1;
            if s.terminated || s.truncated {
                self.env.reset();
            }
        }
        Ok(())
    }

    /// Samples `batch_size` stored transitions uniformly into tensors.
    fn sample(&mut self) -> anyhow::Result<Transitions> {
        let n = self.batch_size;
        let (mut obs, mut next) = (
            Vec::with_capacity(n * OBS_DIM),
            Vec::with_capacity(n * OBS_DIM),
        );
        let (mut actions, mut rewards, mut done) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let i = self.rng.below(self.replay.len as u64) as usize;
            let row = &self.replay.data[i * STRIDE..(i + 1) * STRIDE];
            obs.extend_from_slice(&row[..OBS_DIM]);
            actions.push(row[OBS_DIM] as i64);
            rewards.push(row[OBS_DIM + 1]);
            next.extend_from_slice(&row[OBS_DIM + 2..2 * OBS_DIM + 2]);
            done.push(row[2 * OBS_DIM + 2]);
        }
        let dims = [n as i64, OBS_DIM as i64];
        let [obs, actions, rewards, next_obs, done] = self.mover.to_device([
            Tensor::f_from_slice(&obs)?.f_view(dims)?,
            Tensor::f_from_slice(&actions)?,
            Tensor::f_from_slice(&rewards)?,
            Tensor::f_from_slice(&next)?.f_view(dims)?,
            Tensor::f_from_slice(&done)?,
        ])?;
        Ok(Transitions {
            obs,
            actions,
            rewards,
            next_obs,
            done,
        })
    }
}

impl Task for DqnTask {
    fn signature(&self) -> String {
        self.signature.clone()
    }

    fn load_batch(&mut self) -> anyhow::Result<()> {
        let fill = self.cfg.warmup_steps.max(self.batch_size);
        if self.replay.len < fill {
            self.play(fill - self.replay.len, true)?;
        }
        self.play(self.cfg.steps_per_iter, false)?;
        self.pending = Some(self.sample()?);
        Ok(())
    }

    fn loss(&mut self) -> anyhow::Result<Tensor> {
        let t = self
            .pending
            .take()
            .context("compute without a sampled batch")?;
        let q = self
            .online
            .forward(&t.obs)?
            .f_gather(1, &t.actions.f_unsqueeze(1)?, false)?
            .f_squeeze_dim(1)?;
        let target = {
            let _guard = tch::no_grad_guard();
            let (next_q, _) = self.target.forward(&t.next_obs)?.f_max_dim(1, false)?;
            let not_done = t.done.f_neg()?.f_add_scalar(1.0)?;
            t.rewards
                .f_add(&next_q.f_mul(&not_done)?.f_mul_scalar(self.cfg.gamma)?)?
        };
        Ok(q.f_smooth_l1_loss(&target, Reduction::Mean, 1.0)?)
    }

    fn after_step(&mut self, iterations: u64) -> anyhow::Result<()> {
        if iterations % self.cfg.target_sync.max(1) == 0 {
            self.target.copy_from(&self.online)?;
        }
        Ok(())
    }

    fn discard_batch(&mut self) {
        self.pending = None;
    }

    fn state(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let env = self.env.state();
        let mut counters = vec![
            self.rng.state(),
            self.env_steps,
            self.replay.len as u64,
            self.replay.next as u64,
            env.steps as u64,
            env.rng,
        ];
        counters.extend(env.physics.map(f64::to_bits));
        let used = self.replay.len * STRIDE;
        Ok(vec![
            ("counters".into(), state::u64_tensor(&counters)?),
            (
                "replay".into(),
                Tensor::f_from_slice(&self.replay.data[..used])?,
            ),
        ])
    }

    fn set_state(&mut self, loaded: &Loaded) -> anyhow::Result<()> {
        let c = state::get_u64s(loaded, "task.counters", 10)?;
        let (len, next) = (c[2] as usize, c[3] as usize);
        ensure!(
            len <= self.replay.capacity && next < self.replay.capacity,
            "checkpoint replay state {len}/{next} does not fit capacity {}",
            self.replay.capacity
        );
        let data = state::get_f32s(loaded, "task.replay")?;
        ensure!(
            data.len() == len * STRIDE,
            "checkpoint replay has {} values, expected {}",
            data.len(),
            len * STRIDE
        );
        self.replay.data[..data.len()].copy_from_slice(&data);
        self.replay.len = len;
        self.replay.next = next;
        self.rng = Rng::new(c[0]);
        self.env_steps = c[1];
        self.env.set_state(CartPoleState {
            steps: c[4] as u32,
            rng: c[5],
            physics: [c[6], c[7], c[8], c[9]].map(f64::from_bits),
        });
        Ok(())
    }
}

/// The parameters of a DQN learner of `cfg` (online network; the target is a buffer).
pub fn param_count(cfg: &DqnConfig) -> anyhow::Result<usize> {
    let mut store = ParamStore::shapes_only();
    QNet::new(&mut store, cfg.hidden)?;
    Ok(store.param_count())
}
