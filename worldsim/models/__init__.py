"""Models: the frame autoencoder, action encoders and the world-model transformer."""
