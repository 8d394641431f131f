"""quotaflow.runtime"""
