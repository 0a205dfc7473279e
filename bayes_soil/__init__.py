"""bayes_soil: Bayesian meta-analysis of soil C and N stocks after revegetation."""

__version__ = "0.1.0"
