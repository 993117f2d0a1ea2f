"""zoft-bench (DESIGN §8): one forward against one step of each method, in one process, on the
same model, batch and sequence length; times, their ratios, parameter passes and peak memory."""
