"""TODO recipe"""
