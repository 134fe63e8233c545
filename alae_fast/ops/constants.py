"""Constants every layer of ALAE shares."""

LEAKY_SLOPE = 0.2  # the negative slope of every leaky ReLU of StyleALAE and the MLP ALAE
