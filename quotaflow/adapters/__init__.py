"""quotaflow.adapters"""
