"""Scoring: overlap and surface metrics, the test-split evaluation, the real-CT check, and the
classical threshold baseline the network is compared with.
"""
