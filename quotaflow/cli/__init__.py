"""quotaflow.cli"""
