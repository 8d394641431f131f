"""quotaflow.devstack"""
