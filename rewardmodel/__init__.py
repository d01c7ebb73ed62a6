"""What scores text: backbones with a scalar head, the reward losses, training, evaluation, scoring."""
