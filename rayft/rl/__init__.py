"""Reinforcement learning pieces: PPO math, the PPO loop, reward resolution."""
