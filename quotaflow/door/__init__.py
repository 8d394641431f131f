"""quotaflow.door"""
