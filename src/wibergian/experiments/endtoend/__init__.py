"""End-to-end study: a network feeding an argmin layer (robust line fitting), and the drift /
strong-convexity study of the damped implicit gradient. See docs/endtoend.md."""
