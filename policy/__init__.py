"""What generates text and learns from rewards: loading, generation, SFT, RS/RAFT, DPO, PPO, RLOO."""
